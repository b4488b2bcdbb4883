//! Reading many rows at once without handing them over one by one.
//!
//! sqlx's SQLite driver runs each statement on a thread of its own and sends every row to
//! the waiting task through a channel of 50. A read of a few hundred rows is a few
//! hundred sends, and each time the channel fills the thread parks until the task, which
//! under load waits its turn on the runtime, drains it: on the writer connection, the
//! writer is held meanwhile. Profiled during a burst of deliveries, those sends and the
//! thread switches they caused were a fifth of the server's CPU (`perf`, first wave of
//! `cargo bench --bench load -- outbox-fast`). The size of that channel cannot be set
//! through `sqlx::any`.
//!
//! So on SQLite a multi-row read comes back as ONE row: a JSON array holding one array
//! per row (`json_group_array(json_array(...))`), decoded with serde into the same tuple
//! type PostgreSQL's rows decode into. PostgreSQL reads rows off its socket and needs
//! none of this.

use serde::de::DeserializeOwned;
use sqlx::any::{AnyArguments, AnyRow};

use super::{Backend, Result, decode};

/// The rows of `select`, whose result columns are `columns` (names, comma-separated,
/// in the order of `T`'s fields), with `args` bound in the order of its placeholders.
/// On SQLite in one row (see the module); the order is `select`'s own.
pub(crate) async fn fetch_rows<'e, E, T>(
    backend: Backend,
    executor: E,
    select: &str,
    columns: &str,
    args: AnyArguments,
) -> Result<Vec<T>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
    T: for<'r> sqlx::FromRow<'r, AnyRow> + DeserializeOwned + Send + Unpin,
{
    match backend {
        Backend::Postgres => Ok(
            sqlx::query_as_with(sqlx::AssertSqlSafe(select.to_string()), args)
                .fetch_all(executor)
                .await?,
        ),
        Backend::Sqlite => {
            let sql = format!("select json_group_array(json_array({columns})) from ({select})");
            let (json,): (String,) = sqlx::query_as_with(sqlx::AssertSqlSafe(sql), args)
                .fetch_one(executor)
                .await?;
            decode("rows read as JSON", &json)
        }
    }
}

/// Appends `value` to `args` (the next placeholder's value). Encoding into the Any
/// driver's buffer only pushes the value, so it cannot fail for the types the store binds.
pub(crate) fn bind<'t, T>(args: &mut AnyArguments, value: T)
where
    T: sqlx::Encode<'t, sqlx::Any> + sqlx::Type<sqlx::Any> + 't,
{
    sqlx::Arguments::add(args, value).expect("the Any driver encodes plain values");
}
