//! Key material Berth generates: the token signing key, which `berth serve` creates on first start
//! when it has none and the operator creates once per Registry (so every pod signs alike).

use base64::Engine as _;
use ring::signature::Ed25519KeyPair;

/// A new Ed25519 signing key as PKCS#8 PEM.
pub fn generate_token_key_pem() -> Result<String, String> {
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| format!("generating a token key: {e}"))?;
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(doc.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_pkcs8_pem_and_differ() {
        let (a, b) = (generate_token_key_pem().unwrap(), generate_token_key_pem().unwrap());
        assert!(a.starts_with("-----BEGIN PRIVATE KEY-----\n") && a.ends_with("-----END PRIVATE KEY-----\n"));
        assert_ne!(a, b);
    }
}
