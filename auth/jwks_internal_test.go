package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

func TestParseKeySet_KeepsUsableKeysAndSaysWhyOthersAreSkipped(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	rsaJWK := func(kid string, pub *rsa.PublicKey, extra map[string]any) map[string]any {
		m := map[string]any{"kty": "RSA", "kid": kid, "n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	point, _ := ec.PublicKey.Bytes()
	p384Point, _ := p384.PublicKey.Bytes()
	offCurve := append([]byte(nil), point...)
	offCurve[40] ^= 0xff

	tests := []struct {
		name     string
		key      map[string]any
		wantKeep bool
		wantWhy  string
	}{
		{"RSA without alg", rsaJWK("a", &rsaKey.PublicKey, nil), true, ""},
		{"RSA RS256 sig", rsaJWK("a", &rsaKey.PublicKey, map[string]any{"alg": "RS256", "use": "sig"}), true, ""},
		{"EC P-256", map[string]any{"kty": "EC", "kid": "a", "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:])}, true, ""},
		{"RSA for encryption", rsaJWK("a", &rsaKey.PublicKey, map[string]any{"use": "enc"}), false, "not sig"},
		{"RSA RS512", rsaJWK("a", &rsaKey.PublicKey, map[string]any{"alg": "RS512"}), false, `"RS512" not accepted`},
		{"RSA 1024 bits", rsaJWK("a", &small.PublicKey, nil), false, "too small"},
		{"RSA without kid", rsaJWK("", &rsaKey.PublicKey, nil), false, "no kid"},
		{"EC P-384", map[string]any{"kty": "EC", "kid": "a", "crv": "P-384", "x": b64(p384Point[1:49]), "y": b64(p384Point[49:])}, false, "want P-256"},
		{"EC point off the curve", map[string]any{"kty": "EC", "kid": "a", "crv": "P-256", "x": b64(offCurve[1:33]), "y": b64(offCurve[33:])}, false, "not on curve"},
		{"symmetric key", map[string]any{"kty": "oct", "kid": "a", "k": "c2VjcmV0"}, false, `"oct" not accepted`},
		{"RSA with even exponent", map[string]any{"kty": "RSA", "kid": "a", "n": b64(rsaKey.N.Bytes()), "e": b64([]byte{2})}, false, "exponent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A usable key beside the one under test, so the document itself parses.
			doc, _ := json.Marshal(map[string]any{"keys": []any{tt.key, rsaJWK("anchor", &rsaKey.PublicKey, nil)}})
			ks, skipped, err := parseKeySet(doc)
			if err != nil {
				t.Fatalf("parseKeySet: %v", err)
			}
			_, kept := ks.byKID["a"]
			if kept != tt.wantKeep {
				t.Fatalf("key kept = %v, want %v (skipped: %q)", kept, tt.wantKeep, skipped)
			}
			if !tt.wantKeep && (len(skipped) != 1 || !strings.Contains(skipped[0], tt.wantWhy)) {
				t.Fatalf("skip reasons %q; want one saying %q", skipped, tt.wantWhy)
			}
		})
	}
}

func TestParseKeySet_RefusesADocumentWithoutUsableKeys(t *testing.T) {
	for _, doc := range []string{`{"keys":[]}`, `{"keys":[{"kty":"oct","kid":"a","k":"eA"}]}`, `not json`, `{"keys":[1]}`} {
		if _, _, err := parseKeySet([]byte(doc)); err == nil {
			t.Errorf("parseKeySet(%s) accepted a document with no usable key", doc)
		}
	}
}
