package rabbittest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Node is a private RabbitMQ node started for one test. Fault tests stop and start it
// instead of the shared broker on 5672, which other packages' tests use at the same time.
type Node struct {
	Name string // Erlang node name, e.g. faults-1a2b3c@localhost
	Port int    // AMQP port on 127.0.0.1
	URL  string // amqp://guest:guest@127.0.0.1:<Port>/

	dir string
	env []string
}

const (
	nodeBootTimeout = 90 * time.Second
	ctlTimeout      = 60 * time.Second
)

// StartNode boots a fresh RabbitMQ node on free ports with its own data and log
// directories and stops it when the test ends. It needs the Debian rabbitmq-server
// package and must run as root or as the rabbitmq user (the server runs as rabbitmq,
// which is why the directory is world-writable).
func StartNode(t testing.TB) *Node {
	t.Helper()
	for _, bin := range []string{"rabbitmq-server", "rabbitmqctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			Unavailable(t, "a private RabbitMQ node needs "+bin+" on PATH (apt-get install rabbitmq-server)")
		}
	}

	// Not t.TempDir: its parent is 0700, which the rabbitmq user cannot traverse.
	dir, err := os.MkdirTemp("", "rabbittest-node-")
	if err != nil {
		t.Fatalf("rabbittest: create node directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatalf("rabbittest: make node directory writable for the rabbitmq user: %v", err)
	}
	amqpPort, distPort := freePort(t), freePort(t)
	n := &Node{
		Name: "faults-" + Suffix() + "@localhost",
		Port: amqpPort,
		URL:  fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", amqpPort),
		dir:  dir,
	}
	// The machine-wide rabbitmq.conf pins the listener to 5672, so the node gets its own.
	conf := filepath.Join(dir, "rabbitmq.conf")
	writeFile(t, conf, fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\n", amqpPort))
	plugins := filepath.Join(dir, "enabled_plugins")
	writeFile(t, plugins, "[].\n")
	n.env = append(os.Environ(),
		"RABBITMQ_NODENAME="+n.Name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(amqpPort),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(distPort),
		"RABBITMQ_MNESIA_BASE="+dir,
		"RABBITMQ_LOG_BASE="+dir,
		"RABBITMQ_ENABLED_PLUGINS_FILE="+plugins,
		"RABBITMQ_CONFIG_FILE="+conf,
	)

	// Registered before the start so that a half-started node is stopped as well.
	t.Cleanup(func() { n.stop(t) })
	if out, err := n.run(ctlTimeout, "rabbitmq-server", "-detached"); err != nil {
		t.Fatalf("rabbittest: start node %s: %v\n%s", n.Name, err, out)
	}
	if err := n.awaitReady(nodeBootTimeout); err != nil {
		t.Fatalf("rabbittest: node %s did not start within %s: %v\nlog tail:\n%s", n.Name, nodeBootTimeout, err, n.logTail())
	}
	return n
}

// StopApp stops the RabbitMQ application (every client connection is closed, the port
// stops listening) while the Erlang node keeps running: a broker outage.
func (n *Node) StopApp(t testing.TB) {
	t.Helper()
	if out, err := n.ctl("stop_app"); err != nil {
		t.Fatalf("rabbittest: stop_app on %s: %v\n%s", n.Name, err, out)
	}
}

// StartApp starts the application again and waits until it accepts AMQP connections.
func (n *Node) StartApp(t testing.TB) {
	t.Helper()
	if out, err := n.ctl("start_app"); err != nil {
		t.Fatalf("rabbittest: start_app on %s: %v\n%s", n.Name, err, out)
	}
	if err := n.awaitReady(nodeBootTimeout); err != nil {
		t.Fatalf("rabbittest: node %s did not come back: %v", n.Name, err)
	}
}

// Restart stops the whole node (the Erlang VM exits, as when a broker's host or
// container restarts), keeps it down for at least down, and boots it again on
// the same ports and data directory: durable queues and persistent messages
// survive, every client connection is lost.
func (n *Node) Restart(t testing.TB, down time.Duration) {
	t.Helper()
	began := time.Now()
	if out, err := n.ctl("stop", n.pidFile()); err != nil {
		t.Fatalf("rabbittest: stop node %s: %v\n%s", n.Name, err, out)
	}
	if rest := down - time.Since(began); rest > 0 {
		time.Sleep(rest)
	}
	if out, err := n.run(ctlTimeout, "rabbitmq-server", "-detached"); err != nil {
		t.Fatalf("rabbittest: start node %s again: %v\n%s", n.Name, err, out)
	}
	if err := n.awaitReady(nodeBootTimeout); err != nil {
		t.Fatalf("rabbittest: node %s did not come back within %s: %v\nlog tail:\n%s", n.Name, nodeBootTimeout, err, n.logTail())
	}
}

// QueueStats is one queue as the broker reports it.
type QueueStats struct {
	Name      string `json:"name"`
	Ready     int    `json:"messages_ready"`
	Unacked   int    `json:"messages_unacknowledged"`
	Consumers int    `json:"consumers"`
}

// Queues lists every queue of the node with its ready and unacknowledged
// messages (QueueDepth sees only the ready ones) and its consumers.
func (n *Node) Queues() ([]QueueStats, error) {
	out, err := n.ctl("list_queues", "-q", "--formatter", "json", "name", "messages_ready", "messages_unacknowledged", "consumers")
	if err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues on %s: %w: %s", n.Name, err, bytes.TrimSpace(out))
	}
	var qs []QueueStats
	if err := json.Unmarshal(out, &qs); err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues on %s: %w: %s", n.Name, err, bytes.TrimSpace(out))
	}
	return qs, nil
}

func (n *Node) pidFile() string { return filepath.Join(n.dir, n.Name+".pid") }

// awaitReady waits until the node is registered, booted and serving AMQP. Right after
// `rabbitmq-server -detached` the node is not yet known to epmd and await_startup fails
// at once, hence the loop.
func (n *Node) awaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		out, err := n.ctl("await_startup", "--timeout", "30")
		if err == nil {
			conn, derr := Dial(n.URL)
			if derr == nil {
				_ = conn.Close()
				return nil
			}
			err = derr
		}
		lastErr = fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		time.Sleep(300 * time.Millisecond)
	}
	return lastErr
}

func (n *Node) stop(t testing.TB) {
	out, err := n.ctl("stop")
	if err == nil {
		return
	}
	t.Logf("rabbittest: rabbitmqctl stop %s: %v\n%s", n.Name, err, out)
	// Fall back to the pid the node wrote itself: only ever this test's own node.
	raw, err := os.ReadFile(n.pidFile())
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 1 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// logTail returns the end of the node's log, for a failure message.
func (n *Node) logTail() string {
	raw, err := os.ReadFile(filepath.Join(n.dir, n.Name+".log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(raw) > 4000 {
		raw = raw[len(raw)-4000:]
	}
	return string(raw)
}

func (n *Node) ctl(args ...string) ([]byte, error) {
	return n.run(ctlTimeout, "rabbitmqctl", append([]string{"-n", n.Name}, args...)...)
}

func (n *Node) run(timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = n.env
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%s %s timed out after %s", name, strings.Join(args, " "), timeout)
	}
	return out, err
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("rabbittest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("rabbittest: write %s: %v", path, err)
	}
}
