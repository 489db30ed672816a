//! One DTLS configuration for every session.
//!
//! str0m's aws-lc-rs backend builds a new dimpl `Config` for each peer connection, and building
//! one runs dimpl's self-test of the crypto provider (a key exchange, signatures, AEAD round
//! trips): about a millisecond, two thirds of accepting an offer (docs/decisions.md). A config
//! holds no per-connection state, so [`crypto_provider`] hands str0m a DTLS provider that builds
//! and tests it once, and otherwise is str0m's aws-lc-rs provider unchanged.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// str0m's aws-lc-rs provider with its DTLS config shared across sessions.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: OnceLock<SharedDtls> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = str0m::crypto::from_feature_flags();
            let dtls = DTLS.get_or_init(|| SharedDtls {
                base: base.dtls_provider,
                configs: OnceLock::new(),
            });
            Arc::new(CryptoProvider {
                dtls_provider: dtls,
                ..base
            })
        })
        .clone()
}

#[derive(Debug)]
struct SharedDtls {
    /// Certificates still come from str0m's provider.
    base: &'static dyn DtlsProvider,
    /// The config for the MTU of the first session; str0m passes the same one for every
    /// session of a build, so another MTU (never seen) builds its own.
    configs: OnceLock<(Option<usize>, Arc<dimpl::Config>)>,
}

impl SharedDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let build = || {
            let mut builder = dimpl::Config::builder().use_server_cookie(false);
            if let Some(mtu) = mtu {
                builder = builder.mtu(mtu);
            }
            builder
                .build()
                .map(Arc::new)
                .map_err(|e| CryptoError::Other(format!("DTLS config: {e}")))
        };
        if let Some((m, config)) = self.configs.get() {
            return if *m == mtu {
                Ok(config.clone())
            } else {
                build()
            };
        }
        let config = build()?;
        Ok(self.configs.get_or_init(|| (mtu, config)).1.clone())
    }
}

impl DtlsProvider for SharedDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.base.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        // ICE has checked return routability before DTLS starts, so no server cookie (as
        // str0m's own provider).
        let config = self.config(mtu)?;
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )));
            }
        };
        Ok(Box::new(Session(dtls)))
    }
}

/// One connection's DTLS, as str0m drives it.
struct Session(dimpl::Dtls);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dtls::Session")
    }
}

impl DtlsInstance for Session {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
