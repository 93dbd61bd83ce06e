// Package memnet is an in-memory, TCP-like network for tests.
//
// A [Network] lets a whole cluster of nodes run inside one test process without
// sockets: each node listens on an "IP:PORT" with [Network.Listen] and dials its
// peers from its own IP with [Network.Dial]. Connections are ordered, reliable
// byte streams with a bounded buffer per direction, so a writer blocks when its
// peer stops reading, just as with a real TCP socket.
//
// Hosts are identified by IP. Faults are set on the directed link between two
// hosts: bytes a connection carries from A to B are subject to link(A, B), and
// bytes from B to A to link(B, A), whichever side dialled. See [Network.Cut],
// [Network.Blackhole], [Network.Refuse], [Network.Delay] and [Network.Drop].
//
// # Synctest contract
//
// The package is written to run inside a testing/synctest bubble, where time is
// fake and advances only when every goroutine in the bubble is durably blocked:
//
//   - Every blocking operation (Read, Write, Accept, a hanging Dial, a Write
//     waiting for another Write on the same conn) waits in a select on
//     channels only; mutexes are held only for short critical sections.
//     Nothing spins or polls, and the package starts no goroutines of its own.
//   - Deadlines, Delay and context timeouts are driven by the time package
//     (time.AfterFunc, time.NewTimer), so fake time drives them and a test of
//     a 30 s timeout finishes at once and deterministically.
//
// For this to hold, create the Network, its listeners and its conns inside the
// bubble that uses them; a Network must not be shared between bubbles or
// between a bubble and the outside (the runtime panics when a bubbled channel
// is used from outside its bubble, and waits on unbubbled channels are not
// durable).
//
// Outside synctest the package works the same with the real clock.
package memnet
