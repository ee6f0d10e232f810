//! The peer certificate as `lbx check` reports it: subject, issuer, expiry and days left, parsed
//! from the leaf DER the prober keeps.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// What the report says about a TLS target's leaf certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct CertInfo {
    /// Subject distinguished name, e.g. `CN=localhost`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Expiry as Unix seconds.
    pub not_after: i64,
    /// Whole days left until expiry at the time of the check (negative once expired).
    pub days_left: i64,
}

impl CertInfo {
    /// Parses a DER certificate; `None` when it is not one (the probe's verdict stands either way).
    pub fn from_der(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let not_after = cert.validity().not_after.timestamp();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Some(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after,
            days_left: (not_after - now).div_euclid(86_400),
        })
    }

    /// True when the certificate expires within `warn_days` days (or has expired).
    pub fn expiring(&self, warn_days: u32) -> bool {
        self.days_left < i64::from(warn_days)
    }

    /// Short form for the table: `89d`, or `expired`.
    pub fn short(&self) -> String {
        if self.days_left < 0 {
            "expired".into()
        } else {
            format!("{}d", self.days_left)
        }
    }

    /// The warning shown when it expires soon.
    pub fn warning(&self) -> String {
        match self.days_left {
            d if d < 0 => format!("certificate expired {} days ago", -d),
            1 => "certificate expires in 1 day".into(),
            d => format!("certificate expires in {d} days"),
        }
    }

    /// The JSON object for `--json`.
    pub fn to_json(&self, warn_days: u32) -> Value {
        let expires = u64::try_from(self.not_after)
            .map(|s| crate::term::format_unix(s, 0))
            .ok();
        json!({
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": expires,
            "days_left": self.days_left,
            "expiring_soon": self.expiring(warn_days),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(CertInfo::from_der(b"not a certificate"), None);
        assert_eq!(CertInfo::from_der(&[]), None);
    }

    #[test]
    fn warnings() {
        let c = CertInfo {
            subject: "CN=x".into(),
            issuer: "CN=x".into(),
            not_after: 0,
            days_left: 5,
        };
        assert!(c.expiring(14) && !c.expiring(5));
        assert_eq!(
            (c.short(), c.warning()),
            ("5d".into(), "certificate expires in 5 days".into())
        );
        let old = CertInfo { days_left: -2, ..c };
        assert_eq!(old.short(), "expired");
        assert!(old.expiring(0));
        assert_eq!(old.to_json(14)["not_after"], "1970-01-01T00:00:00.000Z");
    }
}
