//! AWS credentials as the AWS tools find them: the standard environment variables, or a profile
//! of the shared credentials file. Read at each use, so rotated keys are picked up.

use std::path::{Path, PathBuf};

/// One set of AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AwsCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where credentials come from: a configured `profile` is read from the file; otherwise
/// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) when set; otherwise
/// the `AWS_PROFILE` (or `default`) profile of the file. The file is `file` if configured,
/// else `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
pub(crate) fn resolve(
    profile: Option<&str>,
    file: Option<&Path>,
) -> Result<AwsCredentials, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if profile.is_none()
        && let (Some(access_key_id), Some(secret_access_key)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(AwsCredentials {
            access_key_id,
            secret_access_key,
            session_token: env("AWS_SESSION_TOKEN"),
        });
    }
    let profile = profile.map(str::to_owned).or_else(|| env("AWS_PROFILE"));
    let profile = profile.as_deref().unwrap_or("default");
    let path = match file {
        Some(path) => path.to_owned(),
        None => match (env("AWS_SHARED_CREDENTIALS_FILE"), env("HOME")) {
            (Some(file), _) => PathBuf::from(file),
            (None, Some(home)) => Path::new(&home).join(".aws/credentials"),
            (None, None) => {
                return Err("no AWS credentials: AWS_ACCESS_KEY_ID is unset and there is no \
                            HOME for ~/.aws/credentials"
                    .into());
            }
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("no AWS credentials in the environment, and {}: {e}", path.display())
    })?;
    from_file(&text, profile).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads `profile` from the text of a shared credentials file (INI: `[name]` sections, also
/// `[profile name]`; `key = value`; `#` and `;` comments).
pub(crate) fn from_file(text: &str, profile: &str) -> Result<AwsCredentials, String> {
    let mut section: Option<String> = None;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    let mut found = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = name.strip_prefix("profile ").map_or(name, str::trim);
            found |= name == profile;
            section = Some(name.to_owned());
            continue;
        }
        if section.as_deref() != Some(profile) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = value.trim().to_owned();
        match key.trim() {
            "aws_access_key_id" => key_id = Some(value),
            "aws_secret_access_key" => secret = Some(value),
            "aws_session_token" => token = Some(value),
            _ => {}
        }
    }
    if !found {
        return Err(format!("no profile [{profile}]"));
    }
    match (key_id, secret) {
        (Some(access_key_id), Some(secret_access_key))
            if !access_key_id.is_empty() && !secret_access_key.is_empty() =>
        {
            Ok(AwsCredentials { access_key_id, secret_access_key, session_token: token })
        }
        _ => Err(format!("profile [{profile}] lacks aws_access_key_id or aws_secret_access_key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secretdefault

[profile dns]
aws_access_key_id=AKIDDNS
aws_secret_access_key=secret/dns+key
aws_session_token = token
region = ignored

[empty]
aws_access_key_id =
";

    #[test]
    fn profiles_are_read_from_the_shared_file() {
        let default = from_file(FILE, "default").unwrap();
        assert_eq!(default.access_key_id, "AKIDDEFAULT");
        assert_eq!(default.session_token, None);
        let dns = from_file(FILE, "dns").unwrap();
        assert_eq!(
            (dns.secret_access_key.as_str(), dns.session_token.as_deref()),
            ("secret/dns+key", Some("token"))
        );
        assert!(from_file(FILE, "missing").unwrap_err().contains("no profile [missing]"));
        assert!(from_file(FILE, "empty").unwrap_err().contains("lacks"));
        // The secret never shows in debug output.
        assert!(!format!("{dns:?}").contains("secret/dns"));
    }

    #[test]
    fn a_configured_profile_reads_the_configured_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, FILE).unwrap();
        let creds = resolve(Some("dns"), Some(&path)).unwrap();
        assert_eq!(creds.access_key_id, "AKIDDNS");
        let err = resolve(Some("dns"), Some(&dir.path().join("absent"))).unwrap_err();
        assert!(err.contains("absent"), "{err}");
    }
}
