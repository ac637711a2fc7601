//! Who is asking: the API key's name and the client address the caller reports.

/// Who is asking, for policy decisions and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The name of the caller's API key (or the enrollment page).
    pub name: String,
    /// The end user's address as the caller reports it ("" when unknown).
    pub client_ip: String,
}
