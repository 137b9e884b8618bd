//! A PostgreSQL connection string in either of libpq's forms, a URL
//! (`postgres://user:password@host:port/db?key=value`) or `key=value` pairs
//! (`host=db password='a b'`), read into its parameters and written back. The gateway reads
//! the settings tokio-postgres does not (`sslmode`'s verify modes, `sslrootcert`) out of it,
//! and hides its passwords from logs and errors with it.
//!
//! Reading never fails: a string this cannot make sense of is written back as it came,
//! for tokio-postgres to refuse with its own error.

/// The value every password is shown as.
const HIDDEN: &str = "<redacted>";

#[derive(Debug, Clone, PartialEq)]
pub struct ConnInfo {
    form: Form,
}

#[derive(Debug, Clone, PartialEq)]
enum Form {
    /// `scheme://` and what follows up to the query, and the query's pairs (values kept
    /// percent-encoded, as written).
    Url {
        scheme: String,
        rest: String,
        query: Vec<(String, String)>,
    },
    Pairs(Vec<(String, String)>),
}

/// Whether `key` names a password.
fn is_password(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "password" || key == "sslpassword"
}

impl ConnInfo {
    pub fn parse(text: &str) -> ConnInfo {
        let form = match text.split_once("://") {
            Some((scheme, after)) => {
                let (rest, query) = after.split_once('?').unwrap_or((after, ""));
                let query = query
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                Form::Url {
                    scheme: scheme.to_string(),
                    rest: rest.to_string(),
                    query,
                }
            }
            None => Form::Pairs(pairs(text)),
        };
        ConnInfo { form }
    }

    /// Takes the value of `key` out (the last, where it is given twice), decoded.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let (params, url) = match &mut self.form {
            Form::Url { query, .. } => (query, true),
            Form::Pairs(pairs) => (pairs, false),
        };
        let value = params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        params.retain(|(k, _)| k != key);
        value.map(|v| if url { percent_decode(&v) } else { v })
    }

    /// Sets `key` to `value` (a value with no character that would need quoting or
    /// encoding).
    pub fn set(&mut self, key: &str, value: &str) {
        let params = match &mut self.form {
            Form::Url { query, .. } => query,
            Form::Pairs(pairs) => pairs,
        };
        params.retain(|(k, _)| k != key);
        params.push((key.to_string(), value.to_string()));
    }

    /// The string with every password in it hidden: the URL's `user:password@`, and each
    /// `password` or `sslpassword` parameter.
    pub fn redacted(&self) -> String {
        let mut hidden = self.clone();
        match &mut hidden.form {
            Form::Url { rest, query, .. } => {
                let authority_end = rest.find('/').unwrap_or(rest.len());
                if let Some(at) = rest[..authority_end].rfind('@') {
                    if let Some(colon) = rest[..at].find(':') {
                        rest.replace_range(colon + 1..at, HIDDEN);
                    }
                }
                hide(query);
            }
            Form::Pairs(pairs) => hide(pairs),
        }
        hidden.to_string()
    }
}

fn hide(params: &mut [(String, String)]) {
    params
        .iter_mut()
        .filter(|(k, _)| is_password(k))
        .for_each(|(_, v)| *v = HIDDEN.to_string());
}

impl std::fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.form {
            Form::Url {
                scheme,
                rest,
                query,
            } => {
                write!(f, "{scheme}://{rest}")?;
                for (i, (k, v)) in query.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
                }
                Ok(())
            }
            Form::Pairs(pairs) => {
                for (i, (k, v)) in pairs.iter().enumerate() {
                    let needs_quotes = v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\');
                    let value = match needs_quotes {
                        true => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
                        false => v.clone(),
                    };
                    write!(f, "{}{k}={value}", if i == 0 { "" } else { " " })?;
                }
                Ok(())
            }
        }
    }
}

/// libpq's `key=value` pairs: separated by white space, with white space allowed around
/// `=`, a value in single quotes when it holds white space, `\'` and `\\` escaped inside.
fn pairs(text: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            out.push((key, String::new()));
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// `%XX` sequences decoded; anything else kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_read_and_write_back() {
        let mut url = ConnInfo::parse(
            "postgres://u:p@db:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a",
        );
        assert_eq!(url.take("sslmode").as_deref(), Some("verify-full"));
        assert_eq!(url.take("sslrootcert").as_deref(), Some("/etc/ca.pem"));
        url.set("sslmode", "require");
        assert_eq!(url.to_string(), "postgres://u:p@db:5432/x?application_name=a&sslmode=require");
        let mut pairs = ConnInfo::parse("host=db  sslmode = verify-ca password='a b\\'c' dbname=x");
        assert_eq!(pairs.take("sslmode").as_deref(), Some("verify-ca"));
        assert_eq!(pairs.to_string(), "host=db password='a b\\'c' dbname=x");
        assert_eq!(pairs.take("password").as_deref(), Some("a b'c"));
    }
}
