package domain

import (
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzSignatureVerify runs SignatureSpec.Verify on arbitrary headers, bodies
// and secrets, and on what Sign produced for a spec built from the inputs.
// Verify must never panic and every failure wraps ErrBadSignature. For a spec
// that validates: a signed body verifies (with header names in any case, and
// with hex in upper case); a changed body, a changed secret or a changed
// timestamp does not; and a timestamp verifies exactly while it is within the
// tolerance of now. Seeds: testdata/fuzz/FuzzSignatureVerify.
func FuzzSignatureVerify(f *testing.F) {
	f.Add("X-Signature", "sha256=", "", "", false, []byte("secret"), []byte(`{"a":1}`), int64(1709294400), int64(0), uint(0), "X-Signature", "sha256=00")
	f.Add("X-Hub-Signature-256", "", "X-Timestamp", "30s", true, []byte("k"), []byte(""), int64(1709294400), int64(-31), uint(3), "x-timestamp", "1709294400")
	f.Add("Sig", "v1,", "Ts", "", false, []byte{}, []byte("hello"), int64(-1), int64(299), uint(7), "sig", "v1,zz")
	f.Add("Sig", "", "sig", "", false, []byte("secret"), []byte("x"), int64(0), int64(0), uint(0), "", "")
	f.Fuzz(func(t *testing.T, header, prefix, tsHeader, tolerance string, useBase64 bool,
		secret, body []byte, atUnix, skew int64, pick uint, hName, hValue string) {
		spec := SignatureSpec{Header: header, Scheme: SchemeHMACSHA256, Encoding: EncodingHex, Prefix: prefix, TimestampHeader: tsHeader, Tolerance: tolerance}
		if useBase64 {
			spec.Encoding = EncodingBase64
		}
		at := time.Unix(atUnix, 0)
		skew %= 2 * int64(MaxSignatureTolerance/time.Second) // keep now-at far from overflowing

		// Arbitrary headers: never a panic, only ErrBadSignature.
		for _, h := range []map[string]string{nil, {hName: hValue}, {header: hValue, tsHeader: hName}} {
			if err := spec.Verify(secret, h, body, at); err != nil && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify failed with %v, which is not ErrBadSignature", err)
			}
		}
		if spec.Validate() != nil {
			return
		}

		signed := spec.Sign(secret, body, at)
		mustVerify := func(what string, h map[string]string) {
			t.Helper()
			if err := spec.Verify(secret, h, body, at); err != nil {
				t.Fatalf("%s: Verify refused what Sign produced (spec %+v, headers %q): %v", what, spec, h, err)
			}
		}
		mustRefuse := func(what string, secret []byte, h map[string]string, body []byte, now time.Time) {
			t.Helper()
			if err := spec.Verify(secret, h, body, now); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("%s: Verify = %v, want ErrBadSignature (spec %+v)", what, err, spec)
			}
		}
		mustVerify("as signed", signed)

		lower := make(map[string]string, len(signed))
		for k, v := range signed {
			lower[strings.ToLower(k)] = v
		}
		mustVerify("lower-case header names", lower)
		if spec.Encoding == EncodingHex {
			upper := maps.Clone(signed)
			upper[header] = prefix + strings.ToUpper(strings.TrimPrefix(signed[header], prefix))
			mustVerify("upper-case hex", upper)
		}

		changed := append([]byte(nil), body...)
		if len(changed) == 0 {
			changed = append(changed, byte(pick))
		} else {
			changed[pick%uint(len(changed))] ^= 1 << (pick % 8)
		}
		mustRefuse("changed body", secret, signed, changed, at)

		// Not "any other secret": HMAC pads short keys with zeros, so "k" and
		// "k\x00" sign alike. Flipping a bit of a key byte always changes the key.
		if len(secret) > 0 {
			other := append([]byte(nil), secret...)
			other[pick%uint(len(other))] ^= 1 << (pick % 8)
			mustRefuse("changed secret", other, signed, body, at)
		}

		if tsHeader == "" {
			return
		}
		moved := maps.Clone(signed)
		moved[tsHeader] = strconv.FormatInt(atUnix+1, 10) // within any tolerance (at least 1s)
		if atUnix != 1<<63-1 {
			mustRefuse("changed timestamp", secret, moved, body, at)
		}
		now := at.Add(time.Duration(skew) * time.Second)
		err := spec.Verify(secret, signed, body, now)
		if within := (time.Duration(max(skew, -skew)) * time.Second) <= spec.tolerance(); within != (err == nil) {
			t.Fatalf("timestamp %ds from now with tolerance %s: Verify = %v", skew, spec.tolerance(), err)
		}
	})
}
