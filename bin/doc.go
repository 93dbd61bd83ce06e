// Package bin encodes and decodes OpenSIPS BIN packets, the framing that the
// OpenSIPS clusterer (and every module replicating over it) uses between nodes.
//
// The format is fixed by OpenSIPS (core bin_interface); this package follows
// it byte for byte so Go and OpenSIPS 3.3+ nodes can exchange packets.
//
// # Wire format
//
// All integers are little-endian (OpenSIPS copies them from host memory, and
// every platform it runs on is little-endian). A packet is:
//
//	 0               4               8       10      12
//	+---------------+---------------+-------+-------+----------------------+
//	| 'P' '4' 'C' 'K'| total_len u32 |ver i16|cap_len| capability (cap_len) |
//	+---------------+---------------+-------+--u16--+----------------------+
//	| type i32      | body ...                                              |
//	+---------------+-------------------------------------------------------+
//
// total_len counts the whole packet, header included. The body is a plain
// concatenation of fields with no padding:
//
//	int   4 bytes, signed, little-endian
//	str   u16 length, then that many bytes (no terminator; empty = length 0)
//
// Messages addressed to a node other than the direct peer end with a 12-byte
// trailer of three ints (cluster_id, src_node_id, dst_node_id), read from the
// end of the packet: see [Reader.PopTrailerInt] and [Trailer].
//
// # Bounds
//
// A received packet is accepted only if it starts with the marker and
// [MinPacketLen] <= total_len <= [MaxPacketLen]; anything else is an error after
// which the connection must be closed, because the stream can no longer be
// framed. Packets built here never exceed [MaxSendLen] (65,515), the limit of
// OpenSIPS 4.x, which leaves room for a relay to append a trailer.
//
// # Memory
//
// [Parse] and [Reader] alias the frame they are given and do not allocate;
// [StreamReader] keeps one buffer per connection and grows it only to the
// length declared by a frame that passed the bounds check.
package bin
