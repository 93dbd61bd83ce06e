// Package peer manages the TCP connections between clusterer nodes: framing of
// received BIN packets, one bounded write queue per peer drained by a batching
// writer, lazy dialling from the node's advertised IP, and reconnect with
// backoff.
//
// # Why
//
// OpenSIPS sends to a peer only over a connection it opened itself to the
// peer's BIN listener, dialled from its own advertised IP (receivers check the
// source IP). So there are two connections per node pair, each carrying
// traffic mostly in its dialling direction; the one exception, UNKNOWN_ID, is
// written back on the accepted connection a ping arrived on. A Go node must
// therefore dial its own connections, read from both the connections it
// accepts and the ones it dials, and be able to answer on a given accepted
// connection.
//
// Higher layers (the protocol loop, the data plane) must never block on the
// network: a slow or dead peer may cost them a queue of bounded size and a
// prompt error, nothing more. And a peer that crashes must be noticed at once:
// the kernel resets its connections, and that reset, seen by the reader of our
// outgoing connection, is reported immediately rather than at the next send.
//
// # What
//
// A [Manager] listens on one address and keeps, per peer address it sends to:
//
//   - a byte queue: [Manager.Send] (or [Manager.SendParts], for a frame in
//     pieces) copies the frame into it under a short mutex and wakes the
//     peer's writer; it never touches the network and does not allocate in
//     steady state;
//   - one writer goroutine, which dials when the first frame is queued and
//     then writes everything queued since its last write in one Write call,
//     so many frames share a syscall under load;
//   - one outgoing connection, read by its own goroutine (replies such as
//     UNKNOWN_ID arrive there, and so does the reset of a crashed peer).
//
// Every accepted connection gets a reader goroutine too, and is tracked by id
// so [Manager.Reply] can write back on it. Received frames go to
// [Config.OnFrame] together with a [ConnInfo] naming the connection, or to a
// [Receiver] per connection ([Config.NewReceiver]), which may keep state
// without locks, handle a whole read at once (its Flush runs before the
// reader waits for more bytes) and keep the frames of bulk reads instead of
// copying them; this layer never learns node ids, higher layers tag
// connections with them.
//
// A failure of an outgoing connection (dial error or timeout, write error or
// timeout, reset, close by the peer) closes it and is reported once through
// [Config.OnFailure], together with the frames it kept from being written:
// the rest of the batch in flight and the queue, in order. The owner may
// send them another way (the runtime reroutes them, as OpenSIPS retries a
// failed send through the next hop). After a failed dial the peer is in
// backoff and Send fails at once with [ErrBackoff], as a refused connect
// would; after a broken connection the next Send dials again at once, as
// OpenSIPS does. [Manager.Disconnect] and [Manager.Retire] forget a peer
// whose node is gone; Retire first writes what is queued.
//
// Every connection that had a reader is reported once through
// [Config.OnConnClosed] when it ends, so owners can drop per-connection
// state.
//
// [Config.TLS] carries BIN over TLS (OpenSIPS's bins:), per listener and
// per destination address. An accepted connection handshakes on its
// reader's goroutine, bounded by DialTimeout like a dial, so a silent
// client holds nothing for long.
//
// The network is reached through a [Transport]: [TCP] for real sockets, or
// the in-memory network of package memnet in tests.
package peer
