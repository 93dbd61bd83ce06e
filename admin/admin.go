// Package admin serves a clusterer node's management commands over HTTP
// as JSON: OpenSIPS's clusterer MI commands, with OpenSIPS's output shapes,
// for a host to mount on its own server.
//
//	h := admin.New(node, admin.Options{Token: os.Getenv("ADMIN_TOKEN"), Reload: reload})
//	mux.Handle("/admin/", http.StripPrefix("/admin", h))
//
// Each command is reachable two ways:
//
//   - by name: GET or POST /list, /list_topology, /list_cap,
//     /sync_status, /list_shtags; POST /set_status, /send_mi,
//     /broadcast_mi, /remove_node, /reload, /set_cap_status,
//     /cluster_sync, /shtag_set_active with the
//     parameters as a JSON object (or, for GET, a query string). The
//     reply is the command's result as JSON (an object, or "OK"); a
//     failure is an HTTP error status with
//     {"error":{"code":N,"message":"..."}}.
//   - as JSON-RPC 2.0 on POST / with OpenSIPS's MI names
//     (clusterer_list, clusterer_list_topology, clusterer_set_status,
//     cluster_send_mi, cluster_broadcast_mi, clusterer_remove_node,
//     clusterer_reload, clusterer_list_cap, clusterer_set_cap_status,
//     clusterer_list_shtags, clusterer_shtag_set_active) or,
//     for the commands OpenSIPS has no counterpart of (cluster_sync,
//     sync_status), their names, and named or positional params, as
//     OpenSIPS's mi_http module takes them (positional params leave out
//     optional ones first: clusterer_set_status [1, 0] is cluster_id 1,
//     status 0).
//
// GET / lists the commands and their parameters.
//
// # Capabilities
//
// list_cap has clusterer_list_cap's shape ("state" is "Ok" or "not
// synced", "enabled" "yes" or "no", as OpenSIPS 3.1 and later), followed by
// the sync progress of each local capability and, per cluster, the
// capability states the other nodes announced. sync_status is one local
// capability's progress; cluster_sync pulls its data again from a donor,
// as OpenSIPS's per-module dlg_cluster_sync or ul_cluster_sync do. An
// unknown cluster or capability is 404; syncing a disabled capability is
// 409.
//
// # Sharing tags
//
// list_shtags is clusterer_list_shtags: an array of {"Tag", "Cluster",
// "State"} ("active" or "backup"), each followed by the holder as the node
// knows it, the holder's term and the reason (and other node) of the tag's
// last change as the Handler saw it. shtag_set_active takes "tag" as
// "name/cluster_id" (clusterer_shtag_set_active vip/1) and makes the node
// the tag's holder; a malformed tag is 400, an unknown cluster 404.
//
// # Authorization
//
// Reading commands are open: mount the handler where only operators reach
// it. Commands that change something (set_status, send_mi, broadcast_mi,
// remove_node, reload, set_cap_status, cluster_sync, shtag_set_active) need
// "Authorization: Bearer <Options.Token>"; with no token configured they
// are refused (403), and a missing or wrong token is 401.
//
// # Extending
//
// Commands are values (Command) in a table: builtinCommands lists the
// node's, and Handle adds the host's own (for example a "dr_reload" that
// the host also registers with Cluster.RegisterCommand).
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterer-go/clusterer"
)

// Options configures a Handler.
type Options struct {
	// Token authorizes the commands that change something; empty
	// refuses them all.
	Token string
	// Reload re-reads the node's provisioning, for the reload command
	// (OpenSIPS clusterer_reload), typically dbprov's Provisioner.Reload
	// bound to the node. Nil: reload fails as in OpenSIPS without a
	// database ("Database mode is not enabled").
	Reload func(ctx context.Context) error
	// Timeout bounds each command (default 10 s).
	Timeout time.Duration
	// MaxBody bounds a request body (default 64 KiB).
	MaxBody int64
}

// Command is one management command.
type Command struct {
	// Name is the command's path (/Name) and short JSON-RPC name.
	Name string
	// MI is OpenSIPS's MI name, also accepted as the JSON-RPC method.
	MI string
	// Mutating commands need the token.
	Mutating bool
	// Params are the parameter names in OpenSIPS's order (positional
	// JSON-RPC params map to them); a name ending in "?" is optional.
	Params []string
	// Help is one line for the command list.
	Help string
	// Run executes the command. Its result is marshalled as JSON.
	Run func(ctx context.Context, p Params) (any, error)
}

// rpcName is the command's JSON-RPC name: OpenSIPS's, or ours for the
// commands OpenSIPS does not have.
func (cmd Command) rpcName() string {
	if cmd.MI != "" {
		return cmd.MI
	}
	return cmd.Name
}

// Handler serves the commands. It is safe for concurrent use.
type Handler struct {
	c    *clusterer.Cluster
	opts Options

	mu   sync.RWMutex
	cmds []Command
}

// New returns a Handler for node c. It subscribes to c's events
// (Cluster.Subscribe) to remember each sharing tag's last change, until c
// is closed; created before c.Start, it also sees the configured states.
func New(c *clusterer.Cluster, opts Options) *Handler {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = 64 << 10
	}
	h := &Handler{c: c, opts: opts}
	h.cmds = builtinCommands(c, opts, newShTagTracker(c))
	return h
}

// Handle adds a command, or replaces the one with the same Name.
func (h *Handler) Handle(cmd Command) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cmds = slices.DeleteFunc(h.cmds, func(c Command) bool { return c.Name == cmd.Name })
	h.cmds = append(h.cmds, cmd)
}

func (h *Handler) lookup(name string) (Command, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.cmds {
		if c.Name == name || c.MI == name {
			return c, true
		}
	}
	return Command{}, false
}

// Error is a command failure with its HTTP status (and JSON-RPC code).
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("admin: %d: %s", e.Code, e.Message) }

func errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// asError maps a command's error to a status.
func asError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, clusterer.ErrUnknownCluster), errors.Is(err, clusterer.ErrUnknownNode),
		errors.Is(err, clusterer.ErrUnknownCapability):
		return errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, clusterer.ErrCapabilityDisabled):
		return errorf(http.StatusConflict, "%v", err)
	case errors.Is(err, clusterer.ErrConfig), errors.Is(err, clusterer.ErrPacket), errors.Is(err, clusterer.ErrShTag):
		return errorf(http.StatusBadRequest, "%v", err)
	case errors.Is(err, clusterer.ErrDestDown), errors.Is(err, clusterer.ErrCurrentDisabled),
		errors.Is(err, clusterer.ErrNotStarted), errors.Is(err, clusterer.ErrClosed):
		return errorf(http.StatusServiceUnavailable, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusGatewayTimeout, "%v", err)
	}
	return errorf(http.StatusInternalServerError, "%v", err)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.Trim(r.URL.Path, "/")
	if name == "" {
		switch r.Method {
		case http.MethodGet:
			h.serveIndex(w)
		case http.MethodPost:
			h.serveRPC(w, r)
		default:
			writeError(w, errorf(http.StatusMethodNotAllowed, "use GET or POST"))
		}
		return
	}
	cmd, ok := h.lookup(name)
	if !ok {
		writeError(w, errorf(http.StatusNotFound, "unknown command %q (GET / lists them)", name))
		return
	}
	var (
		p   Params
		err *Error
	)
	switch {
	case r.Method == http.MethodPost:
		p, err = h.bodyParams(w, r)
	case r.Method == http.MethodGet && !cmd.Mutating:
		p, err = queryParams(r)
	default:
		w.Header().Set("Allow", allow(cmd))
		err = errorf(http.StatusMethodNotAllowed, "%s takes %s", cmd.Name, allow(cmd))
	}
	if err == nil {
		err = h.authorize(w, r, cmd)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := h.run(r.Context(), cmd, p)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func allow(cmd Command) string {
	if cmd.Mutating {
		return "POST"
	}
	return "GET, POST"
}

// authorize checks the bearer token of a mutating command.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, cmd Command) *Error {
	if !cmd.Mutating {
		return nil
	}
	if h.opts.Token == "" {
		return errorf(http.StatusForbidden, "%s changes the node and no admin token is configured", cmd.Name)
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(h.opts.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="clusterer"`)
		return errorf(http.StatusUnauthorized, "%s needs a valid bearer token", cmd.Name)
	}
	return nil
}

// run checks the parameters and runs the command under the timeout.
func (h *Handler) run(ctx context.Context, cmd Command, p Params) (any, *Error) {
	if err := p.check(cmd); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()
	res, err := cmd.Run(ctx, p)
	if err != nil {
		return nil, asError(err)
	}
	return res, nil
}

func (h *Handler) bodyParams(w http.ResponseWriter, r *http.Request) (Params, *Error) {
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	p := Params{}
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return Params{}, nil // no body: no parameters
		}
		return nil, errorf(http.StatusBadRequest, "request body: %v", err)
	}
	if dec.More() {
		return nil, errorf(http.StatusBadRequest, "request body: more than one JSON value")
	}
	if p == nil {
		p = Params{}
	}
	return p, nil
}

func queryParams(r *http.Request) (Params, *Error) {
	p := Params{}
	for k, vs := range r.URL.Query() {
		if len(vs) == 1 {
			p[k] = vs[0]
			continue
		}
		l := make([]any, len(vs))
		for i, v := range vs {
			l[i] = v
		}
		p[k] = l
	}
	return p, nil
}

func (h *Handler) serveIndex(w http.ResponseWriter) {
	type entry struct {
		Name     string   `json:"name"`
		MI       string   `json:"mi,omitempty"`
		Mutating bool     `json:"mutating"`
		Params   []string `json:"params"`
		Help     string   `json:"help,omitempty"`
	}
	h.mu.RLock()
	out := make([]entry, 0, len(h.cmds))
	for _, c := range h.cmds {
		out = append(out, entry{c.Name, c.MI, c.Mutating, append([]string{}, c.Params...), c.Help})
	}
	h.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"commands": out})
}

// --- JSON-RPC ---

type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	ID      json.RawMessage `json:"id"`
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	Result  any             `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
	ID      json.RawMessage `json:"id"`
}

func (h *Handler) serveRPC(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBody)
	var req rpcRequest
	reply := func(status int, res any, e *Error) {
		id := req.ID
		if len(id) == 0 {
			id = json.RawMessage("null")
		}
		writeJSON(w, status, rpcResponse{JSONRPC: "2.0", Result: res, Error: e, ID: id})
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(http.StatusBadRequest, nil, &Error{Code: -32700, Message: "parse error: " + err.Error()})
		return
	}
	if req.JSONRPC != "2.0" || req.Method == "" {
		reply(http.StatusBadRequest, nil, &Error{Code: -32600, Message: `invalid request: want "jsonrpc":"2.0" and a method`})
		return
	}
	cmd, ok := h.lookup(req.Method)
	if !ok {
		reply(http.StatusNotFound, nil, &Error{Code: -32601, Message: fmt.Sprintf("method %q not found", req.Method)})
		return
	}
	p, perr := rpcParams(cmd, req.Params)
	if perr == nil {
		perr = h.authorize(w, r, cmd)
	}
	var res any
	if perr == nil {
		res, perr = h.run(r.Context(), cmd, p)
	}
	if perr != nil {
		reply(perr.Code, nil, perr)
		return
	}
	reply(http.StatusOK, res, nil)
}

// rpcParams reads named (an object) or positional (an array) params.
func rpcParams(cmd Command, raw json.RawMessage) (Params, *Error) {
	p := Params{}
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return p, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if s[0] == '[' {
		var list []any
		if err := dec.Decode(&list); err != nil {
			return nil, errorf(http.StatusBadRequest, "params: %v", err)
		}
		if len(list) > len(cmd.Params) {
			return nil, errorf(http.StatusBadRequest, "%s takes at most %d params, got %d", cmd.rpcName(), len(cmd.Params), len(list))
		}
		// Fewer values than parameters: the optional ones are left out,
		// first ones first (clusterer_set_status 1 0 is cluster_id,
		// status, as in OpenSIPS's manual).
		skip := len(cmd.Params) - len(list)
		i := 0
		for _, name := range cmd.Params {
			if i == len(list) {
				break
			}
			if strings.HasSuffix(name, "?") && skip > 0 {
				skip--
				continue
			}
			p[strings.TrimSuffix(name, "?")] = list[i]
			i++
		}
		return p, nil
	}
	if err := dec.Decode(&p); err != nil {
		return nil, errorf(http.StatusBadRequest, "params: %v", err)
	}
	return p, nil
}

// --- output ---

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]any{"error": Error{Code: status, Message: err.Error()}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *Error) {
	writeJSON(w, e.Code, map[string]*Error{"error": e})
}

// --- parameters ---

// Params are a command's parameters, decoded from JSON (numbers as
// json.Number) or a query string (strings).
type Params map[string]any

// check refuses unknown and missing parameters.
func (p Params) check(cmd Command) *Error {
	known := map[string]bool{}
	for _, name := range cmd.Params {
		opt := strings.HasSuffix(name, "?")
		name = strings.TrimSuffix(name, "?")
		known[name] = true
		if _, ok := p[name]; !ok && !opt {
			return errorf(http.StatusBadRequest, "%s: parameter %s is required", cmd.Name, name)
		}
	}
	for name := range p {
		if !known[name] {
			return errorf(http.StatusBadRequest, "%s: unknown parameter %q (takes %s)", cmd.Name, name, strings.Join(cmd.Params, ", "))
		}
	}
	return nil
}

// Has reports whether the parameter was given.
func (p Params) Has(name string) bool {
	_, ok := p[name]
	return ok
}

// Int returns an integer parameter given as a JSON number or a string.
func (p Params) Int(name string) (int, error) {
	var s string
	switch v := p[name].(type) {
	case json.Number:
		s = v.String()
	case string:
		s = strings.TrimSpace(v)
	case nil:
		return 0, errorf(http.StatusBadRequest, "parameter %s is missing", name)
	default:
		return 0, errorf(http.StatusBadRequest, "parameter %s must be an integer, not %T", name, v)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "parameter %s: %q is not an integer", name, s)
	}
	return n, nil
}

// String returns a string parameter.
func (p Params) String(name string) (string, error) {
	switch v := p[name].(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case nil:
		return "", errorf(http.StatusBadRequest, "parameter %s is missing", name)
	default:
		return "", errorf(http.StatusBadRequest, "parameter %s must be a string, not %T", name, v)
	}
}

// Strings returns a list of strings (an array, or one string); nil when
// absent.
func (p Params) Strings(name string) ([]string, error) {
	switch v := p[name].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, len(v))
		for i, x := range v {
			switch x := x.(type) {
			case string:
				out[i] = x
			case json.Number:
				out[i] = x.String()
			default:
				return nil, errorf(http.StatusBadRequest, "parameter %s[%d] must be a string, not %T", name, i, x)
			}
		}
		return out, nil
	default:
		return nil, errorf(http.StatusBadRequest, "parameter %s must be an array of strings, not %T", name, v)
	}
}
