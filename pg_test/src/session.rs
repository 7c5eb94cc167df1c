//! Running SQL on a node from the test process: one cached session per node (reconnected
//! after a crash), new sessions on demand, errors with their SQLSTATE, detail and hint.

use crate::Node;
use std::fmt;
use std::time::{Duration, Instant};

/// An error PostgreSQL returned, with the fields tests check.
#[derive(Debug, Clone)]
pub struct SqlError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " HINT: {h}")?;
        }
        Ok(())
    }
}

impl From<postgres::Error> for SqlError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SqlError {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            },
            None => SqlError {
                code: "client".into(),
                message: e.to_string(),
                detail: None,
                hint: None,
            },
        }
    }
}

/// Rows as text, the way psql shows them; NULL is `None`.
pub type Rows = Vec<Vec<Option<String>>>;

impl Node {
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, SqlError> {
        let mut slot = self.client.borrow_mut();
        let stale = slot.as_ref().is_none_or(|c| c.is_closed());
        if stale {
            *slot = Some(self.connect()?);
        }
        let result = f(slot.as_mut().unwrap());
        if let Err(e) = &result {
            if e.as_db_error().is_none() {
                slot.take(); // connection broken: reconnect next time
            }
        }
        result.map_err(SqlError::from)
    }

    /// A new connection, for tests that need several sessions. Waits (up to 30 s) while the
    /// server is still starting up (57P03).
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.connect_once() {
                Err(e)
                    if Instant::now() < deadline && e.code().map(|c| c.code()) == Some("57P03") =>
                {
                    std::thread::sleep(Duration::from_millis(100)); // poll while it starts
                }
                other => return other,
            }
        }
    }

    fn connect_once(&self) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        match self.netns {
            Some(_) => config.host_path(self.socket_dir()),
            None => config.host("127.0.0.1"),
        };
        config
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .application_name("pg_test")
            .connect_timeout(Duration::from_secs(10))
            .connect(postgres::NoTls)
    }

    /// Runs one statement and returns the number of rows it affected (INSERT/UPDATE/DELETE/COPY).
    pub fn row_count(&self, sql: &str) -> u64 {
        self.with_client(|c| c.execute(sql, &[]))
            .unwrap_or_else(|e| panic!("on node {}: {sql}\n  failed: {e}", self.name))
    }

    /// `COPY ... FROM STDIN` with `data` as its input; returns the rows copied.
    pub fn copy_in(&self, sql: &str, data: &str) -> Result<u64, SqlError> {
        use std::io::Write;
        self.with_client(|c| {
            let mut w = c.copy_in(sql)?;
            w.write_all(data.as_bytes()).expect("write COPY data");
            w.finish()
        })
    }

    /// Runs statements on a new session and returns the NOTICE messages they raised.
    pub fn notices(&self, sql: &str) -> Vec<String> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut client = postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()))
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name));
        client.batch_execute(sql).unwrap_or_else(|e| {
            panic!(
                "on node {}: {sql}\n  failed: {}",
                self.name,
                SqlError::from(e)
            )
        });
        drop(client);
        let out = seen.lock().unwrap().clone();
        out
    }

    /// Runs statements (simple protocol; several may be separated by semicolons).
    pub fn try_execute(&self, sql: &str) -> Result<(), SqlError> {
        self.with_client(|c| c.batch_execute(sql))
    }

    pub fn execute(&self, sql: &str) {
        if let Err(e) = self.try_execute(sql) {
            panic!("on node {}: {sql}\n  failed: {e}", self.name);
        }
    }

    /// Rows of the last statement, as text.
    pub fn try_query(&self, sql: &str) -> Result<Rows, SqlError> {
        self.with_client(|c| {
            let msgs = c.simple_query(sql)?;
            let mut rows = Rows::new();
            for m in msgs {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                }
            }
            Ok(rows)
        })
    }

    pub fn query(&self, sql: &str) -> Rows {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("on node {}: {sql}\n  failed: {e}", self.name))
    }

    /// The first column of the first row (None for NULL or no row).
    pub fn scalar(&self, sql: &str) -> Option<String> {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// The server's PostgreSQL major version (15, 18, ...).
    pub fn major(&self) -> u32 {
        self.scalar("SELECT current_setting('server_version_num')::int / 10000")
            .and_then(|v| v.parse().ok())
            .expect("server_version_num")
    }

    /// Runs a statement that must fail, and returns the error.
    pub fn expect_error(&self, sql: &str) -> SqlError {
        match self.try_execute(sql) {
            Ok(()) => panic!(
                "on node {}: {sql}\n  succeeded, but it must fail",
                self.name
            ),
            Err(e) => e,
        }
    }
}
