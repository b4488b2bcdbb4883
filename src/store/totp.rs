//! The `totp_secrets` table: sealed TOTP secrets (never plaintext) and the last time step
//! each user's code was accepted for.

use chrono::{DateTime, Utc};

use super::{Result, Store, ms};

/// A sealed TOTP secret as stored: hex nonce and hex ciphertext (the `totp` module seals
/// and opens it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// 12-byte nonce, hex.
    pub nonce: String,
    /// Ciphertext with its tag, hex.
    pub ciphertext: String,
}

impl Store {
    /// Stores (or replaces) `user`'s sealed secret.
    pub async fn put_totp(&self, user: &str, sealed: &Sealed, now: DateTime<Utc>) -> Result<()> {
        let (mut tx, _turn) = self.begin_raw().await?;
        sqlx::query("delete from totp_secrets where user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into totp_secrets (user_id, nonce, ciphertext, created_at_ms) values ($1, $2, $3, $4)",
        )
        .bind(user)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `user`'s sealed secret, if enrolled.
    pub async fn totp_of(&self, user: &str) -> Result<Option<Sealed>> {
        let row: Option<(String, String)> =
            sqlx::query_as("select nonce, ciphertext from totp_secrets where user_id = $1")
                .bind(user)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(nonce, ciphertext)| Sealed { nonce, ciphertext }))
    }

    /// Accepts time step `step` for `user` once: `false` if it (or a later one) was used.
    pub async fn use_totp_step(&self, user: &str, step: u64) -> Result<bool> {
        let done = sqlx::query(
            "update totp_secrets set last_step = $1 where user_id = $2 and last_step < $1",
        )
        .bind(step as i64)
        .bind(user)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
