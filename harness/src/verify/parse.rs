//! Parsing curl output from the HelloWorld service.

use serde::Serialize;

/// One answer from curl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Answer {
    /// `Hello version: v1, instance: helloworld-v1-...`.
    Hello { version: String, instance: String },
    /// Anything else (an Envoy error body, a curl error), kept verbatim for the report.
    Other { text: String },
}

/// Splits curl output into answers: HelloWorld ends every body with a newline, so a batch of URLs yields one
/// line per request. Blank lines are skipped.
pub fn parse_answers(output: &str) -> Vec<Answer> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Answer {
    let hello = line.strip_prefix("Hello version: ").and_then(|rest| {
        let (version, instance) = rest.split_once(", instance: ")?;
        let ok = !version.is_empty() && !instance.is_empty() && !instance.contains(char::is_whitespace);
        ok.then(|| Answer::Hello {
            version: version.to_string(),
            instance: instance.to_string(),
        })
    });
    hello.unwrap_or_else(|| Answer::Other {
        text: line.chars().take(300).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guide_output() {
        let out = "Hello version: v2, instance: helloworld-v2-758dd55874-6x4t8\n\
                   Hello version: v1, instance: helloworld-v1-86f77cd7bd-cpxhv\n\nno healthy upstream\n";
        let a = parse_answers(out);
        assert_eq!(a.len(), 3);
        assert_eq!(
            a[0],
            Answer::Hello {
                version: "v2".into(),
                instance: "helloworld-v2-758dd55874-6x4t8".into()
            }
        );
        assert_eq!(
            a[2],
            Answer::Other {
                text: "no healthy upstream".into()
            }
        );
    }

    #[test]
    fn malformed_hello_is_other() {
        assert!(matches!(parse_line("Hello version: v1"), Answer::Other { .. }));
        assert!(matches!(
            parse_line("Hello version: , instance: x"),
            Answer::Other { .. }
        ));
    }
}
