package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client calls a Handler over HTTP. It is safe for concurrent use.
type Client struct {
	// BaseURL is where the Handler is mounted, e.g.
	// "http://127.0.0.1:8080/admin".
	BaseURL string
	// Token is sent as a bearer token (needed by mutating commands).
	Token string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// Call runs a command by name with named parameters and decodes its result
// into out (any JSON value if out is nil, discarded). A failure the
// Handler reports is an *Error.
func (c *Client) Call(ctx context.Context, name string, params map[string]any, out any) error {
	body, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("admin: %s: %w", name, err)
	}
	if params == nil {
		body = []byte("{}")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.BaseURL, "/")+"/"+name, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("admin: %s: %w", name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %s: %w", name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin: %s: reading the reply: %w", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != nil {
			return e.Error
		}
		return &Error{Code: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin: %s: decoding the reply: %w", name, err)
	}
	return nil
}

// List calls list.
func (c *Client) List(ctx context.Context) (NodeList, error) {
	var out NodeList
	err := c.Call(ctx, "list", nil, &out)
	return out, err
}

// Topology calls list_topology.
func (c *Client) Topology(ctx context.Context) (Topology, error) {
	var out Topology
	err := c.Call(ctx, "list_topology", nil, &out)
	return out, err
}

// SetStatus enables or disables node in cluster (node 0: the local node).
func (c *Client) SetStatus(ctx context.Context, cluster, node int, enabled bool) error {
	p := map[string]any{"cluster_id": cluster, "status": b2i(enabled)}
	if node != 0 {
		p["node_id"] = node
	}
	return c.Call(ctx, "set_status", p, nil)
}

// RemoveNode calls remove_node.
func (c *Client) RemoveNode(ctx context.Context, cluster, node int) error {
	return c.Call(ctx, "remove_node", map[string]any{"cluster_id": cluster, "node_id": node}, nil)
}

// Reload calls reload.
func (c *Client) Reload(ctx context.Context) error { return c.Call(ctx, "reload", nil, nil) }

// SendMI runs a command on node (send_mi).
func (c *Client) SendMI(ctx context.Context, cluster, node int, cmd string, params ...string) error {
	return c.Call(ctx, "send_mi", map[string]any{"cluster_id": cluster, "destination": node, "cmd_name": cmd, "cmd_params": nonNil(params)}, nil)
}

// BroadcastMI runs a command on every node of cluster (broadcast_mi).
func (c *Client) BroadcastMI(ctx context.Context, cluster int, cmd string, params ...string) error {
	return c.Call(ctx, "broadcast_mi", map[string]any{"cluster_id": cluster, "cmd_name": cmd, "cmd_params": nonNil(params)}, nil)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ListCap calls list_cap.
func (c *Client) ListCap(ctx context.Context) (CapList, error) {
	var out CapList
	err := c.Call(ctx, "list_cap", nil, &out)
	return out, err
}

// SetCapStatus enables or disables a capability of the node
// (set_cap_status).
func (c *Client) SetCapStatus(ctx context.Context, cluster int, capability string, enabled bool) error {
	return c.Call(ctx, "set_cap_status", map[string]any{"cluster_id": cluster, "capability": capability, "status": b2i(enabled)}, nil)
}

// ClusterSync asks the node to pull a capability's data again
// (cluster_sync).
func (c *Client) ClusterSync(ctx context.Context, cluster int, capability string) error {
	return c.Call(ctx, "cluster_sync", map[string]any{"cluster_id": cluster, "capability": capability}, nil)
}

// SyncStatus calls sync_status.
func (c *Client) SyncStatus(ctx context.Context, cluster int, capability string) (SyncState, error) {
	var out SyncState
	err := c.Call(ctx, "sync_status", map[string]any{"cluster_id": cluster, "capability": capability}, &out)
	return out, err
}

// ListShTags calls list_shtags.
func (c *Client) ListShTags(ctx context.Context) ([]ShTag, error) {
	var out []ShTag
	err := c.Call(ctx, "list_shtags", nil, &out)
	return out, err
}

// ShTagSetActive makes the node the holder of a sharing tag, given as
// "name/cluster_id" (shtag_set_active).
func (c *Client) ShTagSetActive(ctx context.Context, tag string) error {
	return c.Call(ctx, "shtag_set_active", map[string]any{"tag": tag}, nil)
}
