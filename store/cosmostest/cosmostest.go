// Package cosmostest gives tests a Cosmos DB endpoint: the cosmium emulator,
// built once per version and started per test on a free port with TLS, or a
// real account when IM_TEST_COSMOS_ENDPOINT is set.
//
// A test that cannot get an endpoint fails when CI=true and is skipped, with
// the way to fix it, otherwise.
package cosmostest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmos"
)

// Environment variables that point the tests at a real account instead of the emulator.
const (
	EndpointEnv = "IM_TEST_COSMOS_ENDPOINT"
	KeyEnv      = "IM_TEST_COSMOS_KEY"
)

// WellKnownKey is the public key of every Cosmos DB emulator (cosmium's default too).
const WellKnownKey = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="

const (
	cosmiumModule  = "github.com/pikami/cosmium"
	cosmiumPackage = cosmiumModule + "/cmd/server"
	startTimeout   = 20 * time.Second
)

// Emulator is one Cosmos DB endpoint for tests.
type Emulator struct {
	Endpoint string
	Key      string
	// Real is true for an account given by IM_TEST_COSMOS_ENDPOINT. Such an
	// endpoint enforces If-Match and expires documents by TTL; cosmium does neither.
	Real bool
	// Insecure: the endpoint's certificate is self-signed (an emulator).
	Insecure bool

	proc *cosmium // nil for a real account
}

// Start returns the endpoint the tests use: the account in
// IM_TEST_COSMOS_ENDPOINT / IM_TEST_COSMOS_KEY if set, otherwise a fresh
// cosmium process (built on first use and cached), stopped in tb.Cleanup.
func Start(tb testing.TB) *Emulator {
	tb.Helper()
	if endpoint := os.Getenv(EndpointEnv); endpoint != "" {
		return fromEnv(tb, endpoint)
	}
	bin, err := cosmiumBinary(tb)
	if err != nil {
		unavailable(tb, "cannot build the cosmium emulator: %v\n"+
			"Fix: run the tests from inside the module with the Go toolchain on PATH and the module cache filled "+
			"(`go mod download %s`), or set %s (and %s) to use a real Cosmos DB account.",
			err, cosmiumModule, EndpointEnv, KeyEnv)
		return nil
	}
	var lastErr error
	for range 3 { // another process may take the free port between probe and start
		e, err := startCosmium(tb, bin)
		if err == nil {
			return e
		}
		lastErr = err
	}
	unavailable(tb, "cannot start the cosmium emulator (%s): %v\n"+
		"Fix: check that %s runs on this machine, or set %s (and %s) to use a real Cosmos DB account.",
		bin, lastErr, bin, EndpointEnv, KeyEnv)
	return nil
}

// fromEnv uses the account named by the environment. Without a key it assumes
// Microsoft's emulator (the well-known key); a localhost endpoint is taken to
// be an emulator with a self-signed certificate.
func fromEnv(tb testing.TB, endpoint string) *Emulator {
	tb.Helper()
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		tb.Fatalf("%s=%q is not an endpoint URL such as https://<account>.documents.azure.com:443/", EndpointEnv, endpoint)
	}
	key := os.Getenv(KeyEnv)
	if key == "" {
		key = WellKnownKey
	}
	host := u.Hostname()
	return &Emulator{Endpoint: endpoint, Key: key, Real: true, Insecure: host == "localhost" || host == "127.0.0.1"}
}

// unavailable fails the test in CI and skips it elsewhere.
func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format, args...)
}

// cosmiumBinary returns the path of the emulator binary, building it into the
// user cache the first time for the version go.mod requires. Test binaries of
// several packages may build at once: each writes a temporary file and
// renames it into place, so none ever runs a half-written binary.
func cosmiumBinary(tb testing.TB) (string, error) {
	tb.Helper()
	version, err := goOutput("list", "-m", "-f", "{{.Version}}", cosmiumModule)
	if err != nil {
		return "", fmt.Errorf("find the cosmium version in go.mod: %w", err)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "castiel-integration-manager", fmt.Sprintf("cosmium-%s-%s-%s", version, runtime.GOOS, runtime.GOARCH))
	bin := filepath.Join(dir, "cosmium")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "cosmium-*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // a no-op once renamed
	tb.Logf("building the cosmium emulator %s into %s", version, dir)
	if _, err := goOutput("build", "-o", tmp.Name(), cosmiumPackage); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	return bin, nil
}

func goOutput(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// startCosmium runs bin on a free port with TLS and waits until it answers.
// The emulator saves its state to a file of the test's when it is stopped
// gracefully, so Stop and Restart keep every database and document.
func startCosmium(tb testing.TB, bin string) (*Emulator, error) {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &cosmium{
		bin:      bin,
		port:     port,
		persist:  filepath.Join(tb.TempDir(), "cosmium-state.json"),
		endpoint: fmt.Sprintf("https://localhost:%d/", port),
		out:      &tailBuffer{max: 8 << 10},
	}
	if err := c.launch(); err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		c.kill()
		if tb.Failed() && c.out.Len() > 0 {
			tb.Logf("cosmium output (last %d bytes):\n%s", c.out.Len(), c.out.String())
		}
	})
	return &Emulator{Endpoint: c.endpoint, Key: WellKnownKey, Insecure: true, proc: c}, nil
}

// cosmium is the emulator process behind an Emulator. After Stop the
// process is gone and the port refuses connections; Restart runs a new one
// on the same port, which loads the state the old one saved on exit.
type cosmium struct {
	bin      string
	port     int
	persist  string
	endpoint string
	out      *tailBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd     // nil while stopped
	exited  chan struct{} // closed when cmd has exited
	serving time.Time     // when cmd first answered
}

// signalsHandledAfter is how long after it first answers cosmium surely
// handles SIGTERM: its main serves before it installs the handler (Start
// returns 50 ms after the listener starts, then waitForExit calls
// signal.Notify), and a SIGTERM before that kills it without saving state.
const signalsHandledAfter = 250 * time.Millisecond

// stopTimeout bounds a graceful stop: cosmium writes its whole state as JSON on exit.
const stopTimeout = 60 * time.Second

func (c *cosmium) launch() error {
	cmd := exec.Command(c.bin, "-Port", strconv.Itoa(c.port), "-AccountKey", WellKnownKey, "-LogLevel", "error", "-Persist", c.persist)
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // reaps the process; the error is only "killed"
		close(exited)
	}()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()
	if err := waitReady(c.endpoint, exited); err != nil {
		c.kill()
		return fmt.Errorf("%w; emulator output: %s", err, strings.TrimSpace(c.out.String()))
	}
	c.mu.Lock()
	c.serving = time.Now()
	c.mu.Unlock()
	return nil
}

// kill ends the process at once (no state saved); a no-op while stopped.
func (c *cosmium) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
	c.cmd = nil
}

// terminate asks the process to save its state and exit, and waits for it.
func (c *cosmium) terminate() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return errors.New("the emulator is not running")
	}
	time.Sleep(time.Until(c.serving.Add(signalsHandledAfter)))
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("send SIGTERM: %w", err)
	}
	select {
	case <-c.exited:
		c.cmd = nil
		if _, err := os.Stat(c.persist); err != nil {
			return fmt.Errorf("the emulator exited without saving its state: %w", err)
		}
		return nil
	case <-time.After(stopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
		c.cmd = nil
		return fmt.Errorf("the emulator did not exit within %v of SIGTERM (killed: its state is lost)", stopTimeout)
	}
}

// Stoppable reports whether Stop and Restart can be used: the endpoint is a
// cosmium process of this test, not a real account.
func (e *Emulator) Stoppable() bool { return e.proc != nil }

// Stop takes the emulator down, as an outage of Cosmos DB would: the process
// saves its state and exits, and until Restart every connection to the
// endpoint is refused. Only for an emulator started by Start (see Stoppable).
func (e *Emulator) Stop(tb testing.TB) {
	tb.Helper()
	if e.proc == nil {
		tb.Fatalf("cosmostest: %s is a real account; only an emulator started by the test can be stopped", e.Endpoint)
	}
	if err := e.proc.terminate(); err != nil {
		tb.Fatalf("cosmostest: stop the emulator on %s: %v\noutput: %s", e.Endpoint, err, e.proc.out.String())
	}
}

// Restart brings a stopped emulator back on the same endpoint with the state
// it had when stopped, and waits until it answers.
func (e *Emulator) Restart(tb testing.TB) {
	tb.Helper()
	if e.proc == nil {
		tb.Fatalf("cosmostest: %s is a real account; only an emulator started by the test can be restarted", e.Endpoint)
	}
	e.proc.mu.Lock()
	running := e.proc.cmd != nil
	e.proc.mu.Unlock()
	if running {
		tb.Fatalf("cosmostest: Restart of the emulator on %s, which is running", e.Endpoint)
	}
	if err := e.proc.launch(); err != nil {
		tb.Fatalf("cosmostest: restart the emulator on %s (another process may have taken its port): %v", e.Endpoint, err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls the endpoint until it answers or the process exits. The
// probe asks for /cosmium/export, which cosmium serves without a signature
// (an unsigned request elsewhere makes it log an authentication error).
func waitReady(endpoint string, exited <-chan struct{}) error {
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // the emulator's self-signed certificate
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(endpoint + "cosmium/export") // the one path cosmium serves unsigned
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("the emulator exited during start-up")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the emulator did not answer on %s within %v: %w", endpoint, startTimeout, err)
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func (t *tailBuffer) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.buf)
}

// Config returns a configuration for a fresh database with a random name,
// which tb.Cleanup deletes again (a real account keeps no test leftovers).
func (e *Emulator) Config(tb testing.TB) cosmos.Config {
	tb.Helper()
	cfg := cosmos.Config{
		Endpoint:           e.Endpoint,
		Key:                e.Key,
		Database:           "imtest-" + randomHex(6),
		InsecureSkipVerify: e.Insecure,
	}
	tb.Cleanup(func() { e.dropDatabase(tb, cfg.Database) })
	return cfg
}

// Open opens a backend with specs on a fresh database; tb.Cleanup closes it
// and deletes the database.
func (e *Emulator) Open(tb testing.TB, specs []store.ContainerSpec) *cosmos.Backend {
	tb.Helper()
	cfg := e.Config(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := cosmos.Open(ctx, cfg, specs, Logger(tb))
	if err != nil {
		tb.Fatalf("open the Cosmos store on %s: %v", e.Endpoint, err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// Logger writes warnings and errors to the test's log.
func Logger(tb testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

func (e *Emulator) dropDatabase(tb testing.TB, name string) {
	tb.Helper()
	cred, err := azcosmos.NewKeyCredential(e.Key)
	if err != nil {
		tb.Logf("drop test database %s: the key is not valid base64", name)
		return
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: e.Insecure}} //nolint:gosec // emulator only
	defer transport.CloseIdleConnections()
	client, err := azcosmos.NewClientWithKey(e.Endpoint, cred, &azcosmos.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: transport, Timeout: 30 * time.Second}},
	})
	if err != nil {
		tb.Logf("drop test database %s: %v", name, err)
		return
	}
	defer client.Close()
	db, err := client.NewDatabase(name)
	if err != nil {
		tb.Logf("drop test database %s: %v", name, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.Delete(ctx, nil); err != nil {
		var re *azcore.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return
		}
		tb.Logf("drop test database %s: %v", name, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}
