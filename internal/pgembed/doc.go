// Package pgembed runs a real PostgreSQL server from the host's own
// binaries (initdb, pg_ctl, postgres), for the control plane's default
// database and for tests.
//
// Start makes a cluster in a directory when it holds none (UTF8, no
// locale, trust authentication on the unix socket only), starts the server
// listening on a unix socket only (no TCP), and creates the database the
// caller names. The socket lives in the data directory itself, or in a
// short directory under the system's temporary directory when the data
// directory's path is too long for a socket address (107 bytes on Linux).
// Either way only the server's own user (and root) may open it, which is
// what makes trust authentication safe here.
//
// PostgreSQL refuses to run as root. When this process is root, the server
// programs run as the unprivileged account "postgres" (created by Debian's
// postgresql package), or "nobody" when there is none: the data directory
// is given to that account, and every directory above it must let it
// through (Start says which one does not).
//
// A server killed hard leaves its postmaster.pid behind; the next Start on
// the same directory starts anyway (PostgreSQL sees that the process is
// gone). Start refuses a directory whose server is still running.
//
// Package pgembed/pgtest gives tests one shared server per test binary and
// a fresh database per test.
package pgembed
