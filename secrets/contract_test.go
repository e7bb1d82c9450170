package secrets_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

// runContract checks the behaviour every secrets.Store promises, so Local and
// the HTTP client are held to the same rules.
func runContract(t *testing.T, newStore func(t *testing.T) secrets.Store) {
	t.Run("round trip of any bytes", func(t *testing.T) {
		s := newStore(t)
		value := make([]byte, 256)
		for i := range value {
			value[i] = byte(i)
		}
		ref, err := s.Put(t.Context(), "tenant-a", value)
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if ref == "" || bytes.Contains([]byte(ref), value[32:128]) {
			t.Fatalf("Put returned ref %q; want an opaque, non-empty reference", ref)
		}
		got, err := s.Get(t.Context(), "tenant-a", ref)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !bytes.Equal(got, value) {
			t.Fatalf("Get returned %d bytes that differ from the %d stored", len(got), len(value))
		}
	})

	t.Run("empty value round trips", func(t *testing.T) {
		s := newStore(t)
		ref, err := s.Put(t.Context(), "tenant-a", nil)
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if got, err := s.Get(t.Context(), "tenant-a", ref); err != nil || len(got) != 0 {
			t.Fatalf("Get = %q, %v; want an empty value", got, err)
		}
	})

	t.Run("the same value twice gets two references", func(t *testing.T) {
		s := newStore(t)
		r1, err1 := s.Put(t.Context(), "tenant-a", []byte("same"))
		r2, err2 := s.Put(t.Context(), "tenant-a", []byte("same"))
		if err1 != nil || err2 != nil {
			t.Fatalf("Put: %v, %v", err1, err2)
		}
		if r1 == r2 {
			t.Fatalf("two Puts returned the same reference %q", r1)
		}
	})

	t.Run("replace keeps the reference and changes the value", func(t *testing.T) {
		s := newStore(t)
		ref, err := s.Put(t.Context(), "tenant-a", []byte("whsec_old"))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if err := s.Replace(t.Context(), "tenant-a", ref, []byte("whsec_new")); err != nil {
			t.Fatalf("Replace: %v", err)
		}
		if got, err := s.Get(t.Context(), "tenant-a", ref); err != nil || string(got) != "whsec_new" {
			t.Fatalf("after Replace, Get = %q, %v; want the new value", got, err)
		}
	})

	t.Run("delete makes the reference unknown", func(t *testing.T) {
		s := newStore(t)
		ref, err := s.Put(t.Context(), "tenant-a", []byte("gone soon"))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if err := s.Delete(t.Context(), "tenant-a", ref); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Get(t.Context(), "tenant-a", ref); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("Get after Delete: error %v, want ErrNotFound", err)
		}
		if err := s.Delete(t.Context(), "tenant-a", ref); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("second Delete: error %v, want ErrNotFound", err)
		}
		if err := s.Replace(t.Context(), "tenant-a", ref, []byte("back?")); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("Replace after Delete: error %v, want ErrNotFound (no resurrection)", err)
		}
	})

	t.Run("another tenant's reference is not found", func(t *testing.T) {
		s := newStore(t)
		const value = "tenant-a-credential"
		ref, err := s.Put(t.Context(), "tenant-a", []byte(value))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if got, err := s.Get(t.Context(), "tenant-b", ref); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("tenant-b read tenant-a's secret: got %q, error %v; want ErrNotFound", got, err)
		}
		if err := s.Replace(t.Context(), "tenant-b", ref, []byte("hijack")); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("tenant-b replaced tenant-a's secret: error %v, want ErrNotFound", err)
		}
		if err := s.Delete(t.Context(), "tenant-b", ref); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("tenant-b deleted tenant-a's secret: error %v, want ErrNotFound", err)
		}
		if got, err := s.Get(t.Context(), "tenant-a", ref); err != nil || string(got) != value {
			t.Fatalf("tenant-a's secret after tenant-b's attempts: %q, %v; want it untouched", got, err)
		}
	})

	t.Run("unknown and malformed references are not found", func(t *testing.T) {
		s := newStore(t)
		for _, ref := range []string{"secret://local/tenant-a/sec_doesnotexist", "secret://nowhere", "not a ref", "../../etc/passwd"} {
			if _, err := s.Get(t.Context(), "tenant-a", ref); !errors.Is(err, secrets.ErrNotFound) {
				t.Errorf("Get(%q): error %v, want ErrNotFound", ref, err)
			}
		}
	})

	t.Run("bad tenant or oversized value is invalid", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Put(t.Context(), "", []byte("x")); !errors.Is(err, secrets.ErrInvalid) {
			t.Errorf("Put with empty tenant: error %v, want ErrInvalid", err)
		}
		if _, err := s.Put(t.Context(), "a/b", []byte("x")); !errors.Is(err, secrets.ErrInvalid) {
			t.Errorf("Put with tenant a/b: error %v, want ErrInvalid", err)
		}
		big := bytes.Repeat([]byte("s"), secrets.MaxValueBytes+1)
		_, err := s.Put(t.Context(), "tenant-a", big)
		if !errors.Is(err, secrets.ErrInvalid) {
			t.Errorf("Put of %d bytes: error %v, want ErrInvalid", len(big), err)
		}
		if err != nil && strings.Contains(err.Error(), "ssssssss") {
			t.Errorf("the error quotes the value: %v", err)
		}
	})
}

// openEmbedded opens a real embedded store in a temporary directory and
// returns its local secrets container.
func openEmbedded(t *testing.T) (*embedded.Backend, store.Container) {
	t.Helper()
	return openEmbeddedAt(t, filepath.Join(t.TempDir(), "store.db"))
}

func openEmbeddedAt(t *testing.T, path string) (*embedded.Backend, store.Container) {
	t.Helper()
	b, err := embedded.Open(path, store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("open embedded store at %s: %v", path, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := b.Container(store.LocalSecretsContainer)
	if err != nil {
		t.Fatalf("container %s: %v", store.LocalSecretsContainer, err)
	}
	return b, c
}

func testKey(fill byte) []byte { return bytes.Repeat([]byte{fill}, 32) }

func newLocal(t *testing.T, c store.Container, key []byte) *secrets.Local {
	t.Helper()
	l, err := secrets.NewLocal(c, key)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return l
}

func TestLocal_Contract(t *testing.T) {
	runContract(t, func(t *testing.T) secrets.Store {
		_, c := openEmbedded(t)
		return newLocal(t, c, testKey(7))
	})
}
