//! SQLite's sandbox: what a client's SQL may not do on a served SQLite
//! database, enforced by the engine on every connection of the pool.
//!
//! * an authorizer callback (`sqlite3_set_authorizer`) refuses `ATTACH`
//!   (which opens or creates a file at any path the server's user can
//!   reach), `DETACH`, `VACUUM INTO` (an `ATTACH` inside SQLite, so the same
//!   refusal stops it, `?mode=ro` or not), the `load_extension()` SQL
//!   function and `PRAGMA writable_schema = ...`. SQLite then fails the
//!   statement while preparing it with `SQLITE_AUTH` ("not authorized"),
//!   which iadb reports as PERMISSION_DENIED. The one `ATTACH` let through
//!   is of the empty file name: the anonymous temporary database that a
//!   plain `VACUUM` attaches to rebuild the file (it names no path).
//! * `SQLITE_DBCONFIG_DEFENSIVE` on: SQL cannot corrupt the file on purpose
//!   (writes to `sqlite_schema`, `journal_mode=OFF`, `schema_version=N`,
//!   shadow tables), whatever else gets through.
//! * `SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION` off (SQLite's default, made
//!   explicit): no shared library is loaded through SQL or the C API.
//!
//! `?allow_attach=true` in the database URL lets `ATTACH`, `DETACH` and
//! `VACUUM INTO` through for those who need them; the rest stays.

use libsqlite3_sys as ffi;
use std::{
    ffi::{CStr, c_char, c_int, c_void},
    ptr::NonNull,
};

/// What a connection's authorizer lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SqliteSandbox {
    /// `ATTACH`, `DETACH` and `VACUUM INTO` allowed (`?allow_attach=true`).
    pub allow_attach: bool,
}

/// The URL option that lets `ATTACH` through.
pub(crate) const ALLOW_ATTACH_OPTION: &str = "allow_attach";

/// The two policies, as statics: the authorizer gets a pointer to one as its
/// user data, which therefore outlives every connection.
static STRICT: SqliteSandbox = SqliteSandbox {
    allow_attach: false,
};
static ATTACH_ALLOWED: SqliteSandbox = SqliteSandbox { allow_attach: true };

/// What a refused statement's caller is told (after SQLite's own "not
/// authorized").
pub(crate) const REFUSED_HINT: &str = "refused by iadb's SQLite sandbox: ATTACH, DETACH, \
     VACUUM INTO, load_extension() and PRAGMA writable_schema are not allowed on a served \
     database (the database URL's allow_attach=true lets ATTACH, DETACH and VACUUM INTO through)";

impl SqliteSandbox {
    /// The policy a URL's options ask for; an unreadable switch is an error
    /// rather than the sandbox's silent default.
    pub(crate) fn from_option(value: Option<&str>) -> Result<Self, String> {
        let allow_attach = match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None => false,
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(_) => {
                return Err(format!(
                    "sqlite URL option {ALLOW_ATTACH_OPTION}: expected true or false"
                ));
            }
        };
        Ok(Self { allow_attach })
    }

    fn user_data(self) -> *mut c_void {
        let policy: &'static SqliteSandbox = if self.allow_attach {
            &ATTACH_ALLOWED
        } else {
            &STRICT
        };
        std::ptr::from_ref(policy).cast_mut().cast()
    }

    /// Installs the sandbox on one open connection; SQLite's result code
    /// when it refuses a setting.
    ///
    /// # Safety
    ///
    /// `db` must be an open connection that no other thread uses during the
    /// call (sqlx's locked handle).
    pub(crate) unsafe fn install(self, db: NonNull<ffi::sqlite3>) -> Result<(), c_int> {
        let db = db.as_ptr();
        // SAFETY: `db` is open and ours for the call (the caller's
        // contract). The callback is a plain function and its user data a
        // static, both valid for the connection's whole life.
        // `sqlite3_db_config` takes (int, int*) for these two options; a
        // null pointer means "do not report the new value".
        unsafe {
            for option in [
                ffi::SQLITE_DBCONFIG_DEFENSIVE,
                ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
            ] {
                let on = c_int::from(option == ffi::SQLITE_DBCONFIG_DEFENSIVE);
                let rc = ffi::sqlite3_db_config(db, option, on, std::ptr::null_mut::<c_int>());
                if rc != ffi::SQLITE_OK {
                    return Err(rc);
                }
            }
            let rc = ffi::sqlite3_set_authorizer(db, Some(authorize), self.user_data());
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
        }
        Ok(())
    }

    /// The decision for one action (SQLite's authorizer codes and their
    /// first two arguments), as `SQLITE_OK` or `SQLITE_DENY`.
    fn decide(self, action: c_int, arg1: Option<&[u8]>, arg2: Option<&[u8]>) -> c_int {
        let refused = match action {
            // The empty file name is the anonymous temporary database (a
            // plain VACUUM's); a NULL one is an expression, refused.
            ffi::SQLITE_ATTACH => !self.allow_attach && !arg1.is_some_and(<[u8]>::is_empty),
            ffi::SQLITE_DETACH => !self.allow_attach,
            ffi::SQLITE_FUNCTION => arg2.is_some_and(|f| f.eq_ignore_ascii_case(b"load_extension")),
            // Reading the pragma is harmless; setting it is not.
            ffi::SQLITE_PRAGMA => {
                arg1.is_some_and(|p| p.eq_ignore_ascii_case(b"writable_schema")) && arg2.is_some()
            }
            _ => false,
        };
        if refused {
            ffi::SQLITE_DENY
        } else {
            ffi::SQLITE_OK
        }
    }
}

/// The bytes of a C string argument, if there is one.
///
/// # Safety
///
/// `p` is null or a NUL-terminated string valid for the callback's duration.
unsafe fn arg<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: the caller's contract; `CStr::from_ptr` only scans for NUL.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// The authorizer SQLite calls while preparing each statement. It never
/// unwinds into C (a panic, which the code has no path to, refuses the
/// action) and does not allocate.
unsafe extern "C" fn authorize(
    user_data: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    _database: *const c_char,
    _trigger_or_view: *const c_char,
) -> c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: `user_data` is the pointer `install` gave, to a static
        // `SqliteSandbox`; the string arguments are SQLite's, valid for the
        // duration of the call.
        let policy = unsafe { user_data.cast::<SqliteSandbox>().as_ref() };
        let Some(policy) = policy else {
            return ffi::SQLITE_DENY;
        };
        let (arg1, arg2) = unsafe { (arg(arg1), arg(arg2)) };
        policy.decide(action, arg1, arg2)
    })
    .unwrap_or(ffi::SQLITE_DENY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let strict = SqliteSandbox::from_option(None).unwrap();
        let open = SqliteSandbox::from_option(Some("true")).unwrap();
        let deny = ffi::SQLITE_DENY;
        let ok = ffi::SQLITE_OK;
        assert_eq!(
            strict.decide(ffi::SQLITE_ATTACH, Some(&b"/tmp/x.db"[..]), None),
            deny
        );
        assert_eq!(strict.decide(ffi::SQLITE_ATTACH, None, None), deny);
        assert_eq!(strict.decide(ffi::SQLITE_ATTACH, Some(&b""[..]), None), ok);
        assert_eq!(
            strict.decide(ffi::SQLITE_DETACH, Some(&b"x"[..]), None),
            deny
        );
        assert_eq!(
            open.decide(ffi::SQLITE_ATTACH, Some(&b"/tmp/x.db"[..]), None),
            ok
        );
        assert_eq!(open.decide(ffi::SQLITE_DETACH, Some(&b"x"[..]), None), ok);
        for policy in [strict, open] {
            assert_eq!(
                policy.decide(ffi::SQLITE_FUNCTION, None, Some(&b"LOAD_EXTENSION"[..])),
                deny
            );
            assert_eq!(
                policy.decide(ffi::SQLITE_FUNCTION, None, Some(&b"lower"[..])),
                ok
            );
            assert_eq!(
                policy.decide(
                    ffi::SQLITE_PRAGMA,
                    Some(&b"writable_schema"[..]),
                    Some(&b"1"[..])
                ),
                deny
            );
            assert_eq!(
                policy.decide(ffi::SQLITE_PRAGMA, Some(&b"writable_schema"[..]), None),
                ok
            );
            assert_eq!(
                policy.decide(
                    ffi::SQLITE_PRAGMA,
                    Some(&b"query_only"[..]),
                    Some(&b"ON"[..])
                ),
                ok
            );
        }
        assert!(SqliteSandbox::from_option(Some("maybe")).is_err());
    }
}
