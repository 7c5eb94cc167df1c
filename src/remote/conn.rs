//! Connections to other nodes, through libpq.
//!
//! A blocking libpq call in a backend ignores query cancel, statement_timeout and
//! pg_terminate_backend. These connections use libpq's asynchronous API and wait on the
//! process latch and the socket together (the pattern of PostgreSQL's libpq-be-fe-helpers.h),
//! checking for interrupts after every wake-up, with a deadline for each step. The connection
//! is accounted as an external file descriptor and closed when dropped, also when an ERROR
//! unwinds through it. Connection strings never appear in errors with their passwords.

use crate::errors::{FedError, FedResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use pq_sys as pq;
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

/// Settings under which every server writes a value's text alike and reads it back exactly.
/// Rows compared or moved between servers through their text (verify(), a repair by
/// difference, restore()) are read under these on every side: a member in another time zone
/// would otherwise differ in every timestamptz, one with another DateStyle would read a date
/// written as 01/02/2026 as another day, one with extra_float_digits = 0 would round floats.
pub const SAME_TEXT: [(&str, &str); 5] = [
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
];

/// Default time allowed to connect, when the conninfo sets no connect_timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one remote statement.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A conninfo string with its secrets removed, for messages and views.
pub fn mask(conninfo: &str) -> String {
    match parse(conninfo) {
        Ok(opts) => opts
            .into_iter()
            .filter(|(k, _)| k != "password" && k != "sslpassword")
            .map(|(k, v)| format!("{k}={}", quote_value(&v)))
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(unparsable connection string)".to_string(),
    }
}

fn quote_value(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:,@".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// The options a conninfo string sets, as libpq parses them (key=value or URI form).
pub fn parse(conninfo: &str) -> FedResult<Vec<(String, String)>> {
    let c = CString::new(conninfo)
        .map_err(|_| FedError::invalid_value("connection string contains a NUL byte"))?;
    let mut err: *mut std::os::raw::c_char = std::ptr::null_mut();
    // SAFETY: libpq parses a NUL-terminated string; we free what it returns.
    unsafe {
        let opts = pq::PQconninfoParse(c.as_ptr(), &mut err);
        if opts.is_null() {
            let msg = if err.is_null() {
                "out of memory".to_string()
            } else {
                CStr::from_ptr(err).to_string_lossy().trim().to_string()
            };
            if !err.is_null() {
                pq::PQfreemem(err.cast());
            }
            return Err(FedError::new(PgSqlErrorCode::ERRCODE_SYNTAX_ERROR, format!("invalid connection string: {msg}"))
                .hint("Use libpq's key=value form, for example 'host=10.0.0.2 port=5432 dbname=app user=federation'."));
        }
        let mut out = vec![];
        let mut p = opts;
        while !(*p).keyword.is_null() {
            if !(*p).val.is_null() {
                out.push((
                    CStr::from_ptr((*p).keyword).to_string_lossy().into_owned(),
                    CStr::from_ptr((*p).val).to_string_lossy().into_owned(),
                ));
            }
            p = p.add(1);
        }
        pq::PQconninfoFree(opts);
        Ok(out)
    }
}

/// Rows as text; NULL is None.
pub type Rows = Vec<Vec<Option<String>>>;

pub struct Remote {
    conn: *mut pq::PGconn,
    fd_accounted: bool,
    /// The masked conninfo, for messages.
    pub target: String,
    /// The schema of pg_federation's internal functions there, once asked ([`Remote::internal`]).
    internal_schema: Option<&'static str>,
    /// How long an answer may take ([`Remote::without_statement_timeout`]).
    answer_within: Duration,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // SAFETY: conn came from PQconnectStartParams and is finished once.
        unsafe {
            if !self.conn.is_null() {
                pq::PQfinish(self.conn);
                self.conn = std::ptr::null_mut();
            }
            if self.fd_accounted {
                pg_sys::ReleaseExternalFD();
            }
        }
    }
}

fn conn_error(conn: *const pq::PGconn) -> String {
    // SAFETY: PQerrorMessage returns a string owned by conn.
    unsafe {
        let p = pq::PQerrorMessage(conn);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().trim().to_string()
        }
    }
}

/// Waits until the socket is ready (or the latch is set), handling interrupts. Returns false
/// when the deadline passed.
fn wait_socket(sock: i32, write: bool, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    let ms = (deadline - now).as_millis().clamp(1, 60_000) as std::os::raw::c_long;
    let events = pg_sys::WL_LATCH_SET as i32
        | pg_sys::WL_TIMEOUT as i32
        | pg_sys::WL_EXIT_ON_PM_DEATH as i32
        | if write {
            pg_sys::WL_SOCKET_WRITEABLE as i32
        } else {
            pg_sys::WL_SOCKET_READABLE as i32
        };
    // SAFETY: MyLatch is this process's latch; the socket belongs to our PGconn.
    unsafe {
        let rc =
            pg_sys::WaitLatchOrSocket(pg_sys::MyLatch, events, sock, ms, pg_sys::PG_WAIT_EXTENSION);
        if rc & pg_sys::WL_LATCH_SET as i32 != 0 {
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
    }
    pgrx::check_for_interrupts!();
    true
}

impl Remote {
    /// Connects, waiting at most connect_timeout (default 10 s). `what` names the other end
    /// in errors ("peer", "member west", ...).
    pub fn connect(conninfo: &str, what: &str) -> FedResult<Remote> {
        Self::connect_within(conninfo, what, CONNECT_TIMEOUT)
    }

    /// Connects, waiting at most the conninfo's connect_timeout, else `default_timeout` (the
    /// worker's probes use a short one: a member behind a cut link must not hold it up).
    pub fn connect_within(
        conninfo: &str,
        what: &str,
        default_timeout: Duration,
    ) -> FedResult<Remote> {
        Self::open(conninfo, what, default_timeout, false)
    }

    /// A logical replication connection (`replication=database`) to the database of
    /// `conninfo`: replication commands (CREATE_REPLICATION_SLOT ... SNAPSHOT 'export') in
    /// the simple query protocol ([`Remote::query`] without parameters), and plain SQL.
    pub fn connect_replication(conninfo: &str, what: &str) -> FedResult<Remote> {
        Self::open(conninfo, what, CONNECT_TIMEOUT, true)
    }

    fn open(
        conninfo: &str,
        what: &str,
        default_timeout: Duration,
        replication: bool,
    ) -> FedResult<Remote> {
        let target = mask(conninfo);
        let opts = parse(conninfo)?;
        let timeout = opts
            .iter()
            .find(|(k, _)| k == "connect_timeout")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(default_timeout);
        // SAFETY: accounting for the descriptor libpq will open.
        if !unsafe { pg_sys::AcquireExternalFD() } {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                format!("could not connect to {what}: too many open files"),
            )
            .hint("Raise max_files_per_process or close other connections."));
        }
        let mut keys = vec![
            c"dbname",
            c"application_name",
            c"keepalives",
            c"keepalives_idle",
        ];
        let cinfo = CString::new(conninfo).unwrap();
        let mut vals: Vec<&CStr> = vec![cinfo.as_c_str(), c"pg_federation", c"1", c"30"];
        if replication {
            keys.push(c"replication");
            vals.push(c"database");
        }
        let mut kp: Vec<*const std::os::raw::c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let mut vp: Vec<*const std::os::raw::c_char> = vals.iter().map(|v| v.as_ptr()).collect();
        kp.push(std::ptr::null());
        vp.push(std::ptr::null());
        // SAFETY: NULL-terminated arrays of NUL-terminated strings; expand_dbname = 1 lets
        // the conninfo in "dbname" override the defaults that follow it... and come first.
        let conn = unsafe { pq::PQconnectStartParams(kp.as_ptr(), vp.as_ptr(), 1) };
        let mut r = Remote {
            conn,
            fd_accounted: true,
            internal_schema: None,
            answer_within: STATEMENT_TIMEOUT + Duration::from_secs(5),
            target: target.clone(),
        };
        if conn.is_null() {
            return Err(FedError::internal("libpq could not allocate a connection"));
        }
        let deadline = Instant::now() + timeout;
        let fail = |r: &Remote, why: String| {
            FedError::new(
                PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                format!("could not connect to {what} ({}): {why}", r.target),
            )
        };
        // SAFETY: polling a live PGconn.
        unsafe {
            if pq::PQstatus(conn) == pq::ConnStatusType::CONNECTION_BAD {
                return Err(fail(&r, conn_error(conn)));
            }
            let mut status = pq::PostgresPollingStatusType::PGRES_POLLING_WRITING;
            loop {
                match status {
                    pq::PostgresPollingStatusType::PGRES_POLLING_OK => break,
                    pq::PostgresPollingStatusType::PGRES_POLLING_FAILED => {
                        return Err(fail(&r, conn_error(conn)))
                    }
                    s => {
                        let write = s == pq::PostgresPollingStatusType::PGRES_POLLING_WRITING;
                        if !wait_socket(pq::PQsocket(conn), write, deadline) {
                            return Err(fail(
                                &r,
                                format!("timed out after {} s", timeout.as_secs()),
                            ));
                        }
                    }
                }
                status = pq::PQconnectPoll(conn);
            }
        }
        // Remote statements of ours are bounded, whatever the other server's defaults.
        r.exec(&format!(
            "SET statement_timeout = {}; SET search_path = pg_catalog",
            STATEMENT_TIMEOUT.as_millis()
        ))?;
        Ok(r)
    }

    /// The schema-qualified name of pg_federation's internal function `func` on the other
    /// server: `federation_internal` from 0.7.0's SQL on, `federation` before (a member not yet
    /// updated while the federation is upgraded node by node). Asked once per connection.
    pub fn internal(&mut self, func: &str) -> FedResult<String> {
        let schema = match self.internal_schema {
            Some(s) => s,
            None => {
                let moved = self.scalar(
                    "SELECT pg_catalog.to_regnamespace('federation_internal') IS NOT NULL",
                    &[],
                )?;
                let s = if moved.as_deref() == Some("t") {
                    crate::catalog::INTERNAL_SCHEMA
                } else {
                    "federation"
                };
                self.internal_schema = Some(s);
                s
            }
        };
        Ok(format!("{schema}.{func}"))
    }

    /// `SELECT schema.func(args)` there ([`Remote::internal`]), the first column of its row.
    pub fn call(
        &mut self,
        func: &str,
        args: &str,
        params: &[Option<&str>],
    ) -> FedResult<Option<String>> {
        let f = self.internal(func)?;
        self.scalar(&format!("SELECT {f}({args})::text"), params)
    }

    /// Runs `sql` with text parameters; returns the rows of its (last) result.
    pub fn query(&mut self, sql: &str, params: &[Option<&str>]) -> FedResult<Rows> {
        self.send(sql, params)?;
        self.receive()
    }

    /// Sends `sql` without waiting for its answer (`receive` collects it), so that several
    /// servers can work at once. libpq copies the parameters before this returns.
    pub fn send(&mut self, sql: &str, params: &[Option<&str>]) -> FedResult<()> {
        let csql =
            CString::new(sql).map_err(|_| FedError::internal("query contains a NUL byte"))?;
        let cparams: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.map(|s| CString::new(s).unwrap_or_default()))
            .collect();
        let pp: Vec<*const std::os::raw::c_char> = cparams
            .iter()
            .map(|p| p.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null()))
            .collect();
        // SAFETY: a live PGconn; arrays outlive the call.
        unsafe {
            let sent = if params.is_empty() {
                pq::PQsendQuery(self.conn, csql.as_ptr())
            } else {
                pq::PQsendQueryParams(
                    self.conn,
                    csql.as_ptr(),
                    pp.len() as i32,
                    std::ptr::null(),
                    pp.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                )
            };
            if sent == 0 {
                return Err(self.lost(conn_error(self.conn)));
            }
        }
        Ok(())
    }

    /// Waits (on the socket and the latch) until libpq holds a whole result, so that
    /// PQgetResult will not block; `what` names it in a timeout.
    fn await_result(&mut self, deadline: Instant, what: &str) -> FedResult<()> {
        // SAFETY: a live PGconn with a query in flight.
        unsafe {
            while pq::PQisBusy(self.conn) != 0 {
                if !wait_socket(pq::PQsocket(self.conn), false, deadline) {
                    return Err(self.lost(format!("timed out waiting for {what}")));
                }
                if pq::PQconsumeInput(self.conn) == 0 {
                    return Err(self.lost(conn_error(self.conn)));
                }
            }
        }
        Ok(())
    }

    /// The rows of the (last) result of what `send` sent.
    pub fn receive(&mut self) -> FedResult<Rows> {
        let deadline = Instant::now() + self.answer_within;
        // SAFETY: a live PGconn with a query in flight.
        unsafe {
            let mut rows = Rows::new();
            let mut error: Option<FedError> = None;
            loop {
                self.await_result(deadline, "the answer")?;
                let res = pq::PQgetResult(self.conn);
                if res.is_null() {
                    break;
                }
                match pq::PQresultStatus(res) {
                    pq::ExecStatusType::PGRES_TUPLES_OK => {
                        rows.clear();
                        for i in 0..pq::PQntuples(res) {
                            let mut row = vec![];
                            for j in 0..pq::PQnfields(res) {
                                if pq::PQgetisnull(res, i, j) != 0 {
                                    row.push(None);
                                } else {
                                    row.push(Some(
                                        CStr::from_ptr(pq::PQgetvalue(res, i, j))
                                            .to_string_lossy()
                                            .into_owned(),
                                    ));
                                }
                            }
                            rows.push(row);
                        }
                    }
                    pq::ExecStatusType::PGRES_COMMAND_OK
                    | pq::ExecStatusType::PGRES_EMPTY_QUERY => {}
                    _ => {
                        if error.is_none() {
                            error = Some(self.remote_error(res));
                        }
                    }
                }
                pq::PQclear(res);
            }
            match error {
                Some(e) => Err(e),
                None => Ok(rows),
            }
        }
    }

    pub fn exec(&mut self, sql: &str) -> FedResult<()> {
        self.query(sql, &[]).map(|_| ())
    }

    /// From now on this session's statements run without the 2 minutes allowed to one
    /// statement, on the server and here (a load's index builds grow with its rows). They
    /// still end on an interrupt of this backend, and on the server's own limits.
    pub fn without_statement_timeout(&mut self) -> FedResult<()> {
        self.exec("SET statement_timeout = 0")?;
        self.answer_within = Duration::from_secs(7 * 24 * 3600);
        Ok(())
    }

    /// Sends `sql`, a COPY, and waits until the server is in its copy mode (`expect`); an
    /// error the statement raised instead is returned.
    fn start_copy(&mut self, sql: &str, expect: pq::ExecStatusType) -> FedResult<()> {
        self.send(sql, &[])?;
        let deadline = Instant::now() + self.answer_within;
        // SAFETY: a live PGconn with a query in flight.
        unsafe {
            self.await_result(deadline, "COPY to start")?;
            let res = pq::PQgetResult(self.conn);
            if res.is_null() {
                return Err(self.lost("no answer to COPY".into()));
            }
            let status = pq::PQresultStatus(res);
            if status == expect {
                pq::PQclear(res);
                return Ok(());
            }
            let e = self.remote_error(res);
            pq::PQclear(res);
            // The rest of the answer, so that the connection could serve again.
            let _ = self.receive();
            Err(e)
        }
    }

    /// Relays `copy_out` (a `COPY ... TO STDOUT` run on this connection's server) into
    /// `copy_in` (a `COPY ... FROM STDIN` run on `dest`'s), row by row as they come, without
    /// holding them here. Rows are awaited on the socket and the process latch: interrupts
    /// (a shutdown of this worker, pg_terminate_backend) end it, and so does `stall` without a
    /// row. Returns the rows relayed. On an error both connections are left mid-COPY: drop
    /// them (the load's transaction on `dest` rolls back with its connection).
    pub fn relay_copy(
        &mut self,
        copy_out: &str,
        dest: &mut Remote,
        copy_in: &str,
        stall: Duration,
    ) -> FedResult<u64> {
        dest.start_copy(copy_in, pq::ExecStatusType::PGRES_COPY_IN)?;
        self.start_copy(copy_out, pq::ExecStatusType::PGRES_COPY_OUT)?;
        let mut rows: u64 = 0;
        let mut deadline = Instant::now() + stall;
        // SAFETY: both PGconns are live and in their copy modes; every buffer libpq hands out
        // is freed with PQfreemem once passed on.
        unsafe {
            loop {
                let mut buf: *mut std::os::raw::c_char = std::ptr::null_mut();
                let n = pq::PQgetCopyData(self.conn, &mut buf, 1);
                if n > 0 {
                    let sent = pq::PQputCopyData(dest.conn, buf, n);
                    pq::PQfreemem(buf as *mut std::ffi::c_void);
                    if sent != 1 {
                        return Err(dest.lost(conn_error(dest.conn)));
                    }
                    rows += 1;
                    deadline = Instant::now() + stall;
                } else if n == 0 {
                    if !wait_socket(pq::PQsocket(self.conn), false, deadline) {
                        return Err(self.lost(format!(
                            "no row for {} s in the middle of a COPY",
                            stall.as_secs()
                        )));
                    }
                    if pq::PQconsumeInput(self.conn) == 0 {
                        return Err(self.lost(conn_error(self.conn)));
                    }
                } else if n == -1 {
                    break;
                } else {
                    return Err(self.lost(conn_error(self.conn)));
                }
            }
        }
        // The source's COPY ended: its result says whether it ended well.
        self.receive()?;
        // SAFETY: dest is live and in COPY IN mode.
        if unsafe { pq::PQputCopyEnd(dest.conn, std::ptr::null()) } != 1 {
            return Err(dest.lost(conn_error(dest.conn)));
        }
        dest.receive()?;
        Ok(rows)
    }

    /// From now on this session writes and reads values' text as every other server's
    /// session under [`SAME_TEXT`] does, whatever this server's own settings.
    pub fn same_text(&mut self) -> FedResult<()> {
        for (name, value) in SAME_TEXT {
            self.query(
                "SELECT pg_catalog.set_config($1, $2, false)",
                &[Some(name), Some(value)],
            )?;
        }
        Ok(())
    }

    /// The first column of the first row.
    pub fn scalar(&mut self, sql: &str, params: &[Option<&str>]) -> FedResult<Option<String>> {
        Ok(self
            .query(sql, params)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    /// The first column of the first row as a number (a count); 0 when there is no row.
    pub fn count(&mut self, sql: &str, params: &[Option<&str>]) -> FedResult<i64> {
        let v = self.scalar(sql, params)?;
        match v {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                FedError::internal(format!(
                    "{} answered \"{v}\" where a number was expected",
                    self.target
                ))
            }),
        }
    }

    /// The first column of every row (NULLs skipped).
    pub fn column(&mut self, sql: &str, params: &[Option<&str>]) -> FedResult<Vec<String>> {
        Ok(self
            .query(sql, params)?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
    }

    fn lost(&self, why: String) -> FedError {
        FedError::new(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("lost the connection to {}: {why}", self.target),
        )
    }

    /// An error the other server raised, with its SQLSTATE, message, detail and hint.
    unsafe fn remote_error(&self, res: *const pq::PGresult) -> FedError {
        let field = |f: u8| {
            let p = pq::PQresultErrorField(res, f as i32);
            if p.is_null() {
                None
            } else {
                Some(CStr::from_ptr(p).to_string_lossy().into_owned())
            }
        };
        let state = field(pq::PG_DIAG_SQLSTATE).unwrap_or_else(|| "XX000".into());
        let msg = field(pq::PG_DIAG_MESSAGE_PRIMARY).unwrap_or_else(|| "unknown error".into());
        let code = sqlstate(&state);
        let mut e = FedError::new(code, format!("on {}: {msg}", self.target));
        if let Some(d) = field(pq::PG_DIAG_MESSAGE_DETAIL) {
            e = e.detail(d);
        }
        if let Some(h) = field(pq::PG_DIAG_MESSAGE_HINT) {
            e = e.hint(h);
        }
        e
    }
}

/// A SQLSTATE string as PostgreSQL's error code.
pub fn sqlstate(s: &str) -> PgSqlErrorCode {
    let b = s.as_bytes();
    if b.len() != 5 {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    let six = |c: u8| ((c.wrapping_sub(b'0')) & 0x3F) as i32;
    let code = six(b[0]) | six(b[1]) << 6 | six(b[2]) << 12 | six(b[3]) << 18 | six(b[4]) << 24;
    PgSqlErrorCode::from(code)
}

/// A connection string without its password, for views.
#[pg_extern(immutable, strict, parallel_safe, schema = "federation_internal")]
fn mask_conninfo(conninfo: &str) -> String {
    mask(conninfo)
}
