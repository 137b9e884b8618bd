//! The request rules that are patterns, written once. The server checks requests with
//! them and the OpenAPI document publishes them, so that a request the document calls
//! valid is one the server accepts, and one it calls invalid is one the server refuses.
//! Each is anchored and uses only what both ECMA-262 (JSON Schema) and Rust's `regex`
//! read alike.

use std::sync::LazyLock;

use regex::Regex;

/// A pattern and its compiled form.
pub struct Pattern {
    pub text: &'static str,
    re: LazyLock<Regex>,
}

impl Pattern {
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

macro_rules! pattern {
    ($(#[$doc:meta])* $name:ident = $re:literal) => {
        $(#[$doc])*
        pub static $name: Pattern = Pattern {
            text: $re,
            re: LazyLock::new(|| Regex::new($re).expect("a valid pattern")),
        };
    };
}

pattern!(
    /// A CPU quantity as a string: millicores (`500m`, up to `999999m`) or a decimal number
    /// of vCPUs below 1000 (`0.5`, `2`); never zero.
    CPU = r"^([1-9][0-9]{0,5}m|0\.[0-9]{0,5}[1-9]|[1-9][0-9]{0,2}(\.[0-9]{1,6})?)$"
);

pattern!(
    /// A size in bytes, Kubernetes style (`512Mi`, `2Gi`, `1.5G`, `1000`); never zero.
    QUANTITY = r"^([0-9]{0,14}[1-9][0-9]{0,14}(\.[0-9]{1,9})?|[0-9]{1,15}\.[0-9]{0,8}[1-9][0-9]{0,8})(k|K|M|G|T|Ki|Mi|Gi|Ti)?$"
);

pattern!(
    /// An absolute path of a job of several steps (a folder, a workdir): at least one
    /// segment, none of them `.` or `..`, no NUL.
    ABSOLUTE_PATH = r"^(/+([^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+))+/*$"
);

pattern!(
    /// The path of an input or output: an absolute path in a folder (two segments or more),
    /// since each one's folder is shared between the steps as a volume, and `/` cannot be.
    FILE_PATH = r"^/+([^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)(/+([^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+))+/*$"
);

pattern!(
    /// An environment variable name.
    ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
);

pattern!(
    /// Text without a NUL character: what reaches a process (its command, arguments and
    /// environment) cannot hold one, nor can a PostgreSQL text value.
    NO_NUL = r"^[^\x00]*$"
);

pattern!(
    /// Something other than white space, somewhere. Not `\S`: Rust's white space has
    /// U+0085 and ECMA-262's has U+FEFF, and Python's (which schema tools may use) has
    /// U+001C-U+001F too; all of them count as white space here, for every reader alike.
    NOT_BLANK = r"[^\s\x1c-\x1f\u0085\uFEFF]"
);

pattern!(
    /// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
    IDEMPOTENCY_KEY = r"^[!-~]{1,255}$"
);

pattern!(
    /// A label selector: `key=value` pairs (or `key==value`) joined by commas.
    LABEL_SELECTOR = r"^[^,=]+==?[^,=]*(,[^,=]+==?[^,=]*)*$"
);

pattern!(
    /// A job id: a UUID in its hyphenated form.
    JOB_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
);

pattern!(
    /// A provider's configured name or a provider kind, as `routing.allow` and
    /// `routing.deny` name them.
    PROVIDER_NAME = r"^[a-z0-9-]{1,40}$"
);

pattern!(
    /// How a cost report groups jobs: by provider, or by the value of one label.
    COST_GROUP_BY = r"^(provider|label:[^,]{1,253})$"
);

pattern!(
    /// The tenant a budget is for: no control character, NUL included.
    BUDGET_TENANT = r"^[^\x00-\x1f\x7f]{1,253}$"
);

pattern!(
    /// The label a budget is for: `KEY=VALUE`, as a job's labels have them.
    BUDGET_LABEL = r"^[^=\x00]{1,253}=[^\x00]{0,1024}$"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by schemathesis: an image of only U+0085, which the schema's `\S` (read as
    /// ECMA-262 does) called valid and the server's (read as Rust does) refused.
    #[test]
    fn blank_means_the_same_to_every_reader() {
        for blank in ["", " ", "\u{85}", "\u{feff}", "\u{1c}\u{1f}", "\t\n\u{a0}\u{3000}"] {
            assert!(!NOT_BLANK.is_match(blank), "{blank:?}");
        }
        for ok in ["img", " a ", "\u{85}x"] {
            assert!(NOT_BLANK.is_match(ok), "{ok:?}");
        }
    }

    #[test]
    fn quantities_and_cpus_are_never_zero() {
        for ok in ["1", "512Mi", "0.5Gi", "1.5G", "0001Ki", "999999999999999Ti"] {
            assert!(QUANTITY.is_match(ok), "{ok}");
        }
        for bad in ["0", "0Mi", "0.0", "", "1.", ".5", " 1Gi", "1Qi", "-1"] {
            assert!(!QUANTITY.is_match(bad), "{bad}");
        }
        for ok in ["500m", "1m", "0.5", "2", "999.999999", "0.000001"] {
            assert!(CPU.is_match(ok), "{ok}");
        }
        for bad in [
            "0", "0m", "0.0", "1000", "1000000m", "m", "1.5.2", " 1", "01",
        ] {
            assert!(!CPU.is_match(bad), "{bad}");
        }
        assert!(LABEL_SELECTOR.is_match("dag_id=etl,env==prod"));
        assert!(!LABEL_SELECTOR.is_match("dag_id"));
        assert!(!LABEL_SELECTOR.is_match(""));
    }
}
