//! Reading many rows at once without handing them over one by one.
//!
//! sqlx's SQLite driver runs each statement on a thread of its own and sends every row to
//! the waiting task through a channel of 50. A read of a few hundred rows is a few
//! hundred sends, and each time the channel fills the thread parks until the task, which
//! under load waits its turn on the runtime, drains it: on the writer connection, the
//! writer is held meanwhile. Profiled during a burst of deliveries (`perf`, first wave of
//! `cargo bench --bench load -- outbox-fast`), they were the largest single cost in the
//! server: 12 % of its samples under `flume::Sender::send`, plus the thread switches.
//! Folding the reads took that first wave from about 4,200 to 5,000 deliveries/s. The
//! size of that channel cannot be set through `sqlx::any`.
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
/// On SQLite in one row (see the module), in `select`'s order: SQLite does not flatten
/// an ordered subquery into an aggregate, so it feeds it the rows in order (the test
/// below checks it).
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

#[cfg(test)]
mod tests {
    use sqlx::any::{AnyArguments, AnyPoolOptions};

    use super::{Backend, bind, fetch_rows};

    type Row = (i64, Option<i64>, String, Option<String>);

    /// What SQLite's JSON row decodes to is exactly what its rows decode to: nulls,
    /// integers beyond 2^53, and text that needs escaping in JSON (quotes, backslashes,
    /// control characters, JSON documents, non-ASCII).
    #[tokio::test]
    async fn sqlite_rows_read_as_one_json_row_are_the_rows_themselves() {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        sqlx::query("create table t (id integer primary key, n integer, s text not null, o text)")
            .execute(&pool)
            .await
            .expect("table");
        let texts = [
            r#"{"kind":"post","text":"a \"quoted\" word"}"#,
            "back\\slash, tab\t, newline\n, bell\u{7}",
            "ünïcödé — 🚨 SEV1",
            "",
        ];
        for (i, text) in texts.iter().enumerate() {
            sqlx::query("insert into t (id, n, s, o) values ($1, $2, $3, $4)")
                .bind(i as i64 + 1)
                .bind(if i % 2 == 0 {
                    Some(i64::MAX - i as i64)
                } else {
                    None
                })
                .bind(*text)
                .bind(if i % 2 == 1 { Some(*text) } else { None })
                .execute(&pool)
                .await
                .expect("row");
        }
        let select = "select id, n, s, o from t where id >= $1 order by id desc";
        let plain: Vec<Row> = sqlx::query_as(select)
            .bind(2_i64)
            .fetch_all(&pool)
            .await
            .expect("plain rows");
        let mut args = AnyArguments::default();
        bind(&mut args, 2_i64);
        let folded: Vec<Row> = fetch_rows(Backend::Sqlite, &pool, select, "id, n, s, o", args)
            .await
            .expect("one JSON row");
        assert_eq!(plain.len(), 3);
        assert_eq!(folded, plain);

        let mut args = AnyArguments::default();
        bind(&mut args, 99_i64);
        let none: Vec<Row> = fetch_rows(Backend::Sqlite, &pool, select, "id, n, s, o", args)
            .await
            .expect("no rows");
        assert!(none.is_empty());
    }
}
