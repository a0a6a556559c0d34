// Package saga runs the control plane's sagas: operations of several steps
// over the database and the sled agents that either finish or are undone,
// and that survive the death of the control plane running them.
//
// A saga is a Kind (a stable name and its ordered Steps) and its params. Each
// step has a Do and, when it changed something, an Undo; both must be
// idempotent, because a control plane that dies between a step's effect and
// the record of it runs the step again when it comes back. Steps keep what
// later steps and undos need in the saga's data (JSON), stored with the
// step's progress.
//
// Progress lives in the database through the Log interface (package
// controlplane/db implements it on PostgreSQL): after every step the
// executor stores the saga's step index, per-step states and data. A step
// that fails unwinds the saga: the failed step's Undo (its Do may have half
// happened) and every done step's Undo run in reverse order. An Undo that
// fails is retried with backoff a bounded number of times; then the saga is
// stuck, logged loudly and shown so in its view, for an operator.
//
// One control plane at a time runs a saga: the executor that claims it
// writes its owner id and a lease, renews the lease while it runs the saga,
// and stores progress only while it still owns it. A saga whose lease
// expired (its owner died) is claimed by any executor, which resumes it:
// a running saga goes on from its stored step (re-running the step that
// was in flight), an unwinding one goes on undoing.
//
// Why not River (riverqueue/river), the durable job library on pgx v5 the
// issue suggests: River supports only PostgreSQL, and its maintainers
// declined CockroachDB support (riverqueue/river#104), while the control
// plane keeps its SQL to what CockroachDB also runs so that a fleet can move
// to a distributed database. A job queue would also leave the saga's undo
// log, step states and updater lock to be built beside it. The executor here
// needs no advisory locks and no LISTEN/NOTIFY: claims and leases are plain
// generation-free compare-and-set UPDATEs, and new sagas are found by
// polling (and by a wake-up within the process that started them).
//
// Tests inject faults through Options.Inject: at each step's phases it may
// fail the step, or (ErrCrash) make the executor stop dead as a killed
// process would, before or after the step's record is stored.
package saga
