//! Secret redaction for anything that reaches logs or reports.

const SECRET_KEYS: &[&str] = &[
    "token:",
    "client-key-data:",
    "client-certificate-data:",
    "password:",
    "ca-key.pem:",
    "\"token\":",
    "bearer ",
    "Bearer ",
];

/// Replaces token values, private keys and client credentials in `text` with `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_key = false;
    for line in text.lines() {
        if in_key {
            if line.contains("-----END") {
                in_key = false;
            }
            continue;
        }
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY") {
            in_key = !line.contains("-----END");
            out.push("<redacted private key>".to_string());
            continue;
        }
        if let Some(pos) = SECRET_KEYS
            .iter()
            .filter_map(|k| line.find(k).map(|p| p + k.len()))
            .min()
        {
            out.push(format!("{} <redacted>", &line[..pos]));
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n")
}

/// The last `lines` lines of `text`, redacted.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    redact(&all[start..].join("\n"))
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
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
