//! TLS set-up shared by every HTTPS client (Slack, PagerDuty, Kubernetes, AWS).
//!
//! Two rustls crypto back-ends end up in the build (ring via kube and slack-morphism,
//! aws-lc-rs via the AWS SDK and reqwest), so rustls cannot pick a process default by
//! itself and panics on the first handshake ("Could not automatically determine the
//! process-level CryptoProvider"). Klaxon installs ring once, before any client exists.

/// Installs ring as rustls's process-wide provider; later calls do nothing.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
