package secrets_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
)

const plaintext = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// localID is the document id inside a Local reference.
func localID(t *testing.T, ref string) (tenant, id string) {
	t.Helper()
	rest, ok := strings.CutPrefix(ref, secrets.LocalRefPrefix)
	tenant, id, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		t.Fatalf("reference %q is not of the form %s<tenant>/<id>", ref, secrets.LocalRefPrefix)
	}
	return tenant, id
}

func TestLocal_StoredDocumentHoldsOnlyCiphertext(t *testing.T) {
	_, c := openEmbedded(t)
	l := newLocal(t, c, testKey(1))
	before := time.Now().UTC().Add(-time.Second)
	ref, err := l.Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	tenant, id := localID(t, ref)
	if tenant != "tenant-a" {
		t.Fatalf("reference %q names tenant %q, want tenant-a", ref, tenant)
	}

	it, err := c.Read(t.Context(), "tenant-a", id)
	if err != nil {
		t.Fatalf("read the stored document: %v", err)
	}
	body := string(it.Body)
	for _, leak := range []string{plaintext, base64.StdEncoding.EncodeToString([]byte(plaintext)), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
		if strings.Contains(body, leak) {
			t.Fatalf("the stored document contains the secret (%q):\n%s", leak, body)
		}
	}
	var doc struct {
		ID         string    `json:"id"`
		TenantID   string    `json:"tenantId"`
		Ciphertext string    `json:"ciphertext"`
		CreatedAt  time.Time `json:"createdAt"`
	}
	if err := json.Unmarshal(it.Body, &doc); err != nil {
		t.Fatalf("stored document is not JSON: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(doc.Ciphertext)
	if doc.ID != id || doc.TenantID != "tenant-a" || err != nil || doc.CreatedAt.Before(before) {
		t.Fatalf("stored document = %s; want id %s, tenantId tenant-a, base64 ciphertext and a createdAt", body, id)
	}
	if len(raw) != 12+len(plaintext)+16 {
		t.Fatalf("ciphertext is %d bytes; want nonce (12) + value (%d) + tag (16)", len(raw), len(plaintext))
	}

	// A fresh nonce per value: the same secret twice encrypts differently.
	ref2, err := l.Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("second Put: %v", err)
	}
	_, id2 := localID(t, ref2)
	it2, _ := c.Read(t.Context(), "tenant-a", id2)
	var doc2 struct {
		Ciphertext string `json:"ciphertext"`
	}
	_ = json.Unmarshal(it2.Body, &doc2)
	if doc2.Ciphertext == doc.Ciphertext || doc2.Ciphertext[:16] == doc.Ciphertext[:16] {
		t.Fatal("the same value stored twice has the same ciphertext or nonce")
	}
}

func TestLocal_ValuesSurviveReopeningTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	b, c := openEmbeddedAt(t, path)
	ref, err := newLocal(t, c, testKey(1)).Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// A restarted process with the same key reads the value back.
	_, c = openEmbeddedAt(t, path)
	got, err := newLocal(t, c, testKey(1)).Get(t.Context(), "tenant-a", ref)
	if err != nil || string(got) != plaintext {
		t.Fatalf("Get after reopening the store: %q, %v; want the stored value", got, err)
	}
}

func TestLocal_WrongKeyCannotDecrypt(t *testing.T) {
	_, c := openEmbedded(t)
	ref, err := newLocal(t, c, testKey(1)).Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, err := newLocal(t, c, testKey(2)).Get(t.Context(), "tenant-a", ref)
	if !errors.Is(err, secrets.ErrUndecryptable) {
		t.Fatalf("Get with another key = %q, %v; want ErrUndecryptable", got, err)
	}
	if !strings.Contains(err.Error(), "encryptionKey changed") {
		t.Errorf("error %q does not tell the operator the key changed", err)
	}
	if strings.Contains(err.Error(), plaintext) || strings.Contains(err.Error(), string(testKey(2))) {
		t.Fatalf("error %q leaks the value or the key", err)
	}
}

func TestLocal_TamperedOrMovedCiphertextIsRefused(t *testing.T) {
	_, c := openEmbedded(t)
	l := newLocal(t, c, testKey(1))
	ref, err := l.Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	_, id := localID(t, ref)
	it, err := c.Read(t.Context(), "tenant-a", id)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(it.Body, &doc); err != nil {
		t.Fatalf("decode: %v", err)
	}
	for k := range doc {
		if strings.HasPrefix(k, "_") {
			delete(doc, k) // system properties the backend added on read
		}
	}

	t.Run("a flipped bit", func(t *testing.T) {
		raw, _ := base64.StdEncoding.DecodeString(doc["ciphertext"].(string))
		raw[len(raw)/2] ^= 1
		tampered := clone(doc)
		tampered["ciphertext"] = base64.StdEncoding.EncodeToString(raw)
		putDoc(t, c, "tenant-a", id, tampered)
		if got, err := l.Get(t.Context(), "tenant-a", ref); !errors.Is(err, secrets.ErrUndecryptable) {
			t.Fatalf("Get of a tampered ciphertext = %q, %v; want ErrUndecryptable", got, err)
		}
		putDoc(t, c, "tenant-a", id, doc)
	})

	t.Run("copied into another tenant's partition", func(t *testing.T) {
		moved := clone(doc)
		moved["tenantId"] = "tenant-b"
		if _, err := c.Create(t.Context(), "tenant-b", id, mustJSON(t, moved)); err != nil {
			t.Fatalf("plant the copy: %v", err)
		}
		forged := secrets.LocalRefPrefix + "tenant-b/" + id
		got, err := l.Get(t.Context(), "tenant-b", forged)
		if !errors.Is(err, secrets.ErrUndecryptable) {
			t.Fatalf("tenant-b read a ciphertext copied from tenant-a: %q, %v; want ErrUndecryptable", got, err)
		}
	})

	if got, err := l.Get(t.Context(), "tenant-a", ref); err != nil || string(got) != plaintext {
		t.Fatalf("the original after the attempts: %q, %v", got, err)
	}
}

func TestLocal_StoreOutageIsUnavailable(t *testing.T) {
	b, c := openEmbedded(t)
	l := newLocal(t, c, testKey(1))
	ref, err := l.Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err = l.Get(t.Context(), "tenant-a", ref)
	if !errors.Is(err, secrets.ErrUnavailable) || !secrets.IsTransient(err) {
		t.Fatalf("Get on a closed store: error %v, want ErrUnavailable (transient)", err)
	}
	_, err = l.Put(t.Context(), "tenant-a", []byte(plaintext))
	if !errors.Is(err, secrets.ErrUnavailable) {
		t.Fatalf("Put on a closed store: error %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), plaintext) {
		t.Fatalf("error %q leaks the value", err)
	}
}

func TestNewLocal_RefusesABadKey(t *testing.T) {
	_, c := openEmbedded(t)
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := secrets.NewLocal(c, make([]byte, n)); err == nil {
			t.Errorf("NewLocal accepted a %d-byte key; only 32 bytes (AES-256) may be used", n)
		}
	}
	if _, err := secrets.NewLocal(nil, testKey(1)); err == nil {
		t.Error("NewLocal accepted a nil container")
	}
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func putDoc(t *testing.T, c store.Container, pk, id string, doc map[string]any) {
	t.Helper()
	if _, err := c.Upsert(t.Context(), pk, id, mustJSON(t, doc)); err != nil {
		t.Fatalf("write document: %v", err)
	}
}
