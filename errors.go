package clusterer

import (
	"errors"

	"github.com/clusterer-go/clusterer/internal/peer"
)

// Errors returned by the Cluster. Test them with errors.Is.
var (
	// ErrCurrentDisabled: the local node is disabled in the cluster
	// (OpenSIPS CLUSTERER_CURR_DISABLED).
	ErrCurrentDisabled = errors.New("clusterer: local node disabled in the cluster")
	// ErrDestDown: the destination is unknown or unreachable
	// (CLUSTERER_DEST_DOWN).
	ErrDestDown = errors.New("clusterer: destination down")
	// ErrSend: the packet could not be handed to the network
	// (CLUSTERER_SEND_ERR); the error wraps the cause.
	ErrSend = errors.New("clusterer: send failed")
	// ErrQueueFull accompanies ErrSend when the next hop's queue is full
	// (Config.QueueBytes): the link works but is slower than the sender.
	ErrQueueFull = errors.New("clusterer: send queue full")
	// ErrUnknownCluster: the local node is not a member of the cluster.
	ErrUnknownCluster = errors.New("clusterer: unknown cluster")
	// ErrUnknownNode: no such node in the cluster.
	ErrUnknownNode = errors.New("clusterer: unknown node")
	// ErrClosed: the Cluster was closed (or never started).
	ErrClosed = errors.New("clusterer: closed")
	// ErrNotStarted: the operation needs a started Cluster.
	ErrNotStarted = errors.New("clusterer: not started")
	// ErrStarted: the operation is only allowed before Start.
	ErrStarted = errors.New("clusterer: already started")
	// ErrConfig is wrapped by every configuration error, which names the
	// offending field.
	ErrConfig = errors.New("clusterer: invalid configuration")
	// ErrCapability is wrapped by capability registration errors.
	ErrCapability = errors.New("clusterer: invalid capability")
	// ErrPacket is wrapped by errors about a packet given to SendTo or
	// SendAll (bad capability name, too large).
	ErrPacket = errors.New("clusterer: invalid packet")
)

// Send result codes of OpenSIPS's clusterer API, for hosts that mirror them.
const (
	SendSuccess         = 0  // CLUSTERER_SEND_SUCCES
	SendCurrentDisabled = 1  // CLUSTERER_CURR_DISABLED
	SendDestDown        = -1 // CLUSTERER_DEST_DOWN
	SendError           = -2 // CLUSTERER_SEND_ERR
)

// SendCode maps the error of SendTo or SendAll to OpenSIPS's numeric code.
func SendCode(err error) int {
	switch {
	case err == nil:
		return SendSuccess
	case errors.Is(err, ErrCurrentDisabled):
		return SendCurrentDisabled
	case errors.Is(err, ErrDestDown), errors.Is(err, ErrUnknownNode):
		return SendDestDown
	}
	return SendError
}

// sendErr wraps a transport error as ErrSend, keeping the cause testable.
func sendErr(err error) error {
	switch {
	case errors.Is(err, peer.ErrClosed):
		return errors.Join(ErrSend, ErrClosed)
	case errors.Is(err, peer.ErrQueueFull):
		return errors.Join(ErrSend, ErrQueueFull)
	}
	return errors.Join(ErrSend, err)
}
