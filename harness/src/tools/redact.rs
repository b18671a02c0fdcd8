//! Secret redaction for anything that reaches logs or reports: private keys, tokens and client credentials,
//! whether they come as YAML, JSON (pretty or on one line), a command-line flag or an HTTP header.

/// Keys whose value is a secret. A quoted value is cut to its closing quote (JSON stays JSON); an unquoted one to
/// the end of the line (a YAML value may hold spaces).
const SECRET_KEYS: &[&str] = &[
    "token:",
    "\"token\":",
    "client-key-data:",
    "\"client-key-data\":",
    "client-certificate-data:",
    "\"client-certificate-data\":",
    "password:",
    "\"password\":",
    "ca-key.pem:",
    "\"ca-key.pem\":",
];

/// Prefixes of a secret that is one word: a flag's value or an Authorization header's credentials.
const SECRET_WORDS: &[&str] = &["--token=", "--token ", "Bearer ", "bearer "];

const REDACTED: &str = "<redacted>";
const REDACTED_KEY: &str = "<redacted private key>";

/// Replaces token values, private keys and client credentials in `text` with `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_key = false;
    for line in text.lines() {
        let mut line = line.to_string();
        if in_key {
            // Inside a multi-line PEM key: drop lines up to its END marker, keep what follows the marker.
            match pem_end(&line, 0) {
                Some(end) => {
                    in_key = false;
                    line = line[end..].to_string();
                    if line.trim().is_empty() {
                        continue;
                    }
                }
                None => continue,
            }
        }
        let (l, open) = redact_pem_in_line(&line);
        in_key = open;
        out.push(redact_values(&l));
    }
    out.join("\n")
}

/// Where the `-----END … -----` marker at or after `from` ends, if there is one.
fn pem_end(line: &str, from: usize) -> Option<usize> {
    let at = from + line[from..].find("-----END")?;
    let after = at + "-----END".len();
    let close = line[after..].find("-----")?;
    Some(after + close + "-----".len())
}

/// Replaces every private key that starts on this line; returns whether the last one goes on past it.
fn redact_pem_in_line(line: &str) -> (String, bool) {
    let mut out = String::new();
    let mut rest = line;
    while let Some(begin) = rest.find("-----BEGIN") {
        let header_end = rest[begin + 10..].find("-----").map(|p| begin + 10 + p + 5);
        let is_private = header_end.is_some_and(|h| rest[begin..h].contains("PRIVATE KEY"));
        let Some(h) = header_end.filter(|_| is_private) else {
            // A certificate or a broken header: not secret, keep it and look further.
            let skip = begin + 10;
            out.push_str(&rest[..skip]);
            rest = &rest[skip..];
            continue;
        };
        out.push_str(&rest[..begin]);
        out.push_str(REDACTED_KEY);
        match pem_end(rest, h) {
            Some(end) => rest = &rest[end..],
            None => return (out, true),
        }
    }
    out.push_str(rest);
    (out, false)
}

/// Replaces the values of secret keys and secret words on one line.
fn redact_values(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    loop {
        let key = SECRET_KEYS
            .iter()
            .map(|k| (k, false))
            .chain(SECRET_WORDS.iter().map(|k| (k, true)))
            .filter_map(|(k, word)| rest.find(k).map(|p| (p, p + k.len(), word, k.starts_with('"'))))
            .min();
        let Some((_, value_at, word, json)) = key else {
            out.push_str(rest);
            return out;
        };
        let (head, tail) = rest.split_at(value_at);
        out.push_str(head);
        let spaces = tail.len() - tail.trim_start_matches([' ', '\t']).len();
        out.push_str(&tail[..spaces]);
        let value = &tail[spaces..];
        let consumed = match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                // A quoted value ends at its closing quote (a backslash escapes one in JSON).
                let mut close = None;
                let mut escaped = false;
                for (i, ch) in value.char_indices().skip(1) {
                    match ch {
                        '\\' if !escaped => escaped = true,
                        c if c == q && !escaped => {
                            close = Some(i);
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                out.push(q);
                out.push_str(REDACTED);
                match close {
                    Some(i) => {
                        out.push(q);
                        i + 1
                    }
                    None => value.len(),
                }
            }
            // A word, or an unquoted JSON value (`null`, a number): up to the next delimiter.
            _ if word || json => {
                out.push_str(REDACTED);
                value
                    .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']'))
                    .unwrap_or(value.len())
            }
            None => 0,
            _ => {
                out.push_str(REDACTED);
                value.len()
            }
        };
        rest = &value[consumed..];
    }
}

/// The last `lines` lines of `text`, redacted. Redaction comes first: a window that starts inside a private key
/// would otherwise show its body without the BEGIN line that marks it.
pub fn tail(text: &str, lines: usize) -> String {
    let clean = redact(text);
    let all: Vec<&str> = clean.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keys_and_client_data_are_removed() {
        let text = "users:\n- name: c\n  user:\n    token: eyJhbGciOi.secret\n    client-key-data: QUJD\n\
                    -----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\nserver: https://x\n\
                    Authorization: Bearer abc.def";
        let r = redact(text);
        assert!(
            !r.contains("eyJhbGciOi")
                && !r.contains("QUJD")
                && !r.contains("MHcCAQEE")
                && !r.contains("abc.def"),
            "{r}"
        );
        assert!(r.contains("server: https://x"));
        assert!(r.contains("token: <redacted>"));
        assert!(r.contains("<redacted private key>"));
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn a_tail_that_starts_inside_a_private_key_shows_none_of_it() {
        let text = "log line\n-----BEGIN PRIVATE KEY-----\nAAAAsecretbody1\nBBBBsecretbody2\n\
                    -----END PRIVATE KEY-----\nlast line";
        let t = tail(text, 3);
        assert!(!t.contains("secretbody"), "{t}");
        assert!(t.ends_with("last line"), "{t}");
    }

    #[test]
    fn flags_and_one_line_json_lose_their_secrets_but_keep_their_shape() {
        let r = redact("istioctl x --token=abc123def --name=c2 --token xyz789 --context=c1");
        assert_eq!(
            r,
            "istioctl x --token=<redacted> --name=c2 --token <redacted> --context=c1"
        );
        let json =
            r#"{"users":[{"user":{"client-key-data":"S0VZ","token":"t0k\"en"}}],"server":"https://x"}"#;
        let r = redact(json);
        assert!(!r.contains("S0VZ") && !r.contains("t0k"), "{r}");
        let v: serde_json::Value = serde_json::from_str(&r).expect("still JSON");
        assert_eq!(v["server"], "https://x");
        assert_eq!(v["users"][0]["user"]["token"], "<redacted>");
    }

    #[test]
    fn a_private_key_inside_a_json_string_is_cut_out_and_certificates_stay() {
        let json = r#"{"ca-cert.pem":"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n","k":"-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----\n"}"#;
        let r = redact(json);
        assert!(!r.contains("MIIEsecret"), "{r}");
        assert!(r.contains("BEGIN CERTIFICATE-----\\nMIIC"), "{r}");
        serde_json::from_str::<serde_json::Value>(&r).expect("still JSON");
    }
}
