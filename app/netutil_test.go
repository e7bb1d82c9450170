package app_test

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// serveLoopback serves h on a free loopback port until the test ends and
// returns its base URL (http://127.0.0.1:port).
func serveLoopback(tb testing.TB, h http.Handler) string {
	tb.Helper()
	ln, err := listenLoopback()
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// hangingFirstReceiver is a webhook endpoint whose first call hangs until
// its caller hangs up (or the test ends); later calls answer 200.
type hangingFirstReceiver struct {
	url        string
	callerGone chan time.Time // when the first call's caller hung up

	mu    sync.Mutex
	calls []receivedCall
}

type receivedCall struct {
	webhookID string
	at        time.Time
}

func newHangingFirstReceiver(t *testing.T) *hangingFirstReceiver {
	t.Helper()
	r := &hangingFirstReceiver{callerGone: make(chan time.Time, 1)}
	released := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Read to the end: only then does the server watch the connection, so
		// the request's context ends when the caller hangs up.
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.calls = append(r.calls, receivedCall{req.Header.Get("webhook-id"), time.Now()})
		n := len(r.calls)
		r.mu.Unlock()
		if n == 1 {
			select {
			case <-req.Context().Done():
				r.callerGone <- time.Now()
			case <-released:
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	r.url = serveLoopback(t, handler) + "/hook"
	t.Cleanup(func() { close(released) }) // runs before the server's close: a hanging call returns
	return r
}

func (r *hangingFirstReceiver) received() []receivedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedCall(nil), r.calls...)
}
