//! What a registration's attestation proved, as the relying party verified it: the value
//! device records and AAGUID policies are built on.

/// The attestation of a registered credential. webauthn-rs verified the attestation
/// statement's signature; `trusted_root` says whether its certificate chain was also
/// verified, and to which configured root; `aaguid_bound` whether that chain binds the
/// model. Only then is `aaguid` the vendor's word rather than the authenticator's own claim:
/// a blanket vendor root signs keys whose authenticator data software builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAttestation {
    /// The attestation statement format: `packed`, `tpm`, `apple`, `android-key`,
    /// `fido-u2f` or `none`.
    pub format: String,
    /// The authenticator model's AAGUID from the authenticator data ("" when all zero).
    pub aaguid: String,
    /// The configured root the attestation chain was verified to (`apple`,
    /// `microsoft-tpm`, `google-android`, or `trusted_roots:<file>`); `None` when no chain
    /// was verified.
    pub trusted_root: Option<String>,
    /// Whether the verified chain binds `aaguid`: the attestation certificate's FIDO AAGUID
    /// extension names it, or the chain's root is one the FIDO metadata gives for that
    /// model alone. False without a verified chain.
    pub aaguid_bound: bool,
    /// The credential says it may be synced to other devices.
    pub backup_eligible: bool,
}

impl VerifiedAttestation {
    /// The AAGUID when a verified chain binds it: the only AAGUID an allow-list or a
    /// minimum certification may trust.
    pub fn verified_aaguid(&self) -> Option<&str> {
        match self.trusted_root {
            Some(_) if self.aaguid_bound && !self.aaguid.is_empty() => Some(&self.aaguid),
            _ => None,
        }
    }

    pub fn chain_verified(&self) -> bool {
        self.trusted_root.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aaguid_counts_only_under_a_verified_chain_that_binds_it() {
        let mut attestation = VerifiedAttestation {
            format: "packed".to_owned(),
            aaguid: "c5ef55ff-ad9a-4b9f-b580-adebafe026d0".to_owned(),
            trusted_root: None,
            aaguid_bound: true,
            backup_eligible: false,
        };
        assert_eq!(attestation.verified_aaguid(), None);
        assert!(!attestation.chain_verified());
        attestation.trusted_root = Some("apple".to_owned());
        attestation.aaguid_bound = false;
        // Under a blanket root without the AAGUID extension: the chain, not the model.
        assert!(attestation.chain_verified());
        assert_eq!(attestation.verified_aaguid(), None);
        attestation.aaguid_bound = true;
        assert_eq!(
            attestation.verified_aaguid(),
            Some("c5ef55ff-ad9a-4b9f-b580-adebafe026d0")
        );
        attestation.aaguid.clear();
        assert_eq!(attestation.verified_aaguid(), None);
    }
}
