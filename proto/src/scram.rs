//! SCRAM-SHA-256 credentials (RFC 5802, RFC 7677): what the cluster keeps
//! of a password, and the check of a password against it.
//!
//! The client computes the credential (`replog user create`), so the
//! password never enters the cluster's replicated state; the broker keeps
//! `stored_key` and `server_key` and, given a password, recomputes
//! `stored_key` and compares in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations for new credentials (RFC 7677's minimum is 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Most iterations a credential may ask for: each check costs this many
/// HMACs, and a request carrying a password pays it once per connection.
pub const MAX_ITERATIONS: u32 = 1 << 20;

/// What the cluster keeps of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn salted(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations)
}

fn stored_key(salted: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(hmac(salted, b"Client Key")).into()
}

impl Credential {
    /// The credential of `password` with `salt` (16 random bytes or more).
    pub fn new(password: &str, salt: &[u8], iterations: u32) -> Credential {
        let s = salted(password, salt, iterations);
        Credential {
            salt: salt.to_vec(),
            iterations,
            stored_key: stored_key(&s).to_vec(),
            server_key: hmac(&s, b"Server Key").to_vec(),
        }
    }

    /// Whether `password` is the one this credential was made from.
    pub fn verify(&self, password: &str) -> bool {
        let s = salted(password, &self.salt, self.iterations);
        stored_key(&s).ct_eq(&self.stored_key).into()
    }

    /// Checks what a credential from the network may hold.
    pub fn validate(&self) -> Result<(), String> {
        if self.salt.len() < 16 || self.salt.len() > 64 {
            return Err("the salt must be 16 to 64 bytes".into());
        }
        if !(DEFAULT_ITERATIONS..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(format!("iterations must be {DEFAULT_ITERATIONS}..={MAX_ITERATIONS}"));
        }
        if self.stored_key.len() != 32 || self.server_key.len() != 32 {
            return Err("stored and server keys are 32 bytes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user "user", password "pencil", salt
    /// W22ZaJ0SNY7soEsUEjb6gQ== (base64), 4096 iterations.
    #[test]
    fn given_rfc_7677_example_then_the_keys_match_and_only_the_password_verifies() {
        let salt = [91, 109, 153, 104, 157, 18, 53, 142, 236, 160, 75, 20, 18, 54, 250, 129];
        let c = Credential::new("pencil", &salt, 4096);
        // The RFC's ServerSignature is HMAC(ServerKey, AuthMessage).
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = [
            234, 186, 226, 77, 16, 98, 219, 117, 169, 69, 31, 240, 182, 234, 126, 152, 200, 84, 101, 73, 255, 116, 30,
            103, 45, 50, 81, 178, 57, 125, 228, 110,
        ];
        assert_eq!(hmac(&c.server_key, auth_message.as_bytes()), signature);
        assert_eq!(c.stored_key.len(), 32);
        assert!(c.verify("pencil"));
        assert!(!c.verify("pencil "));
        assert!(!c.verify(""));
        c.validate().unwrap();
        assert!(Credential { iterations: 1, ..c.clone() }.validate().is_err());
        assert!(Credential { salt: vec![1], ..c }.validate().is_err());
    }
}
