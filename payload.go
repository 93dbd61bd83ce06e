package clusterer

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/clusterer-go/clusterer/bin"
)

// Generic messages and command parameters are strings on the wire. Encode
// and Decode carry a typed Go value in one, msgpack-encoded, for Go nodes
// talking to Go nodes (an OpenSIPS script would see binary text).

// Encode marshals v into a message body.
func Encode(v any) (string, error) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return string(b), nil
}

// Decode unmarshals a body made by Encode into v, which must be a pointer.
// A body that is not exactly one msgpack value of v's shape is an error
// wrapping ErrPayload (v may then be partly filled). Declared lengths are
// checked against the body first, so a hostile body cannot make it
// allocate more than its own size.
func Decode(body string, v any) error {
	if err := bin.DecodeValue([]byte(body), v); err != nil {
		return fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return nil
}
