package domain

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestValidationError_ListsEveryFieldAndMatchesErrInvalid(t *testing.T) {
	var ve ValidationError
	if ve.Err() != nil {
		t.Fatal("an empty ValidationError must convert to a nil error")
	}
	ve.Add("url", "must use https")
	ve.Merge("mapping[0]", NewValidationError("target", "is required"))
	ve.Merge("eventTypes", NewValidationError("[2]", "bad filter"))
	ve.Merge("settings", errors.New("plain error"))
	ve.Merge("ignored", nil)
	err := ve.Err()

	if !errors.Is(err, ErrInvalid) {
		t.Fatal("errors.Is(err, ErrInvalid) is false")
	}
	wrapped := fmt.Errorf("create webhook: %w", err)
	var got *ValidationError
	if !errors.As(wrapped, &got) {
		t.Fatal("errors.As through a wrap failed")
	}
	want := []FieldError{
		{"url", "must use https"},
		{"mapping[0].target", "is required"},
		{"eventTypes[2]", "bad filter"},
		{"settings", "plain error"},
	}
	if fmt.Sprint(got.Fields) != fmt.Sprint(want) {
		t.Fatalf("fields = %v, want %v", got.Fields, want)
	}
	if msg := err.Error(); !strings.Contains(msg, "url: must use https; mapping[0].target: is required") {
		t.Fatalf("message %q does not list the fields", msg)
	}
}

func TestIsValidID_AcceptsConservativeGrammarOnly(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{"tenant-1", true},
		{"a", true},
		{"0", true},
		{"Tenant_A.b:c-d", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"-lead", false},
		{"_lead", false},
		{".lead", false},
		{"a/b", false},
		{"a\\b", false},
		{"a?b", false},
		{"a#b", false},
		{"a b", false},
		{"ä", false},
		{"a\x00", false},
	}
	for _, tc := range cases {
		if got := IsValidID(tc.id); got != tc.want {
			t.Errorf("IsValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestIsValidCategory_AcceptsLowercaseSlugs(t *testing.T) {
	cases := map[string]bool{
		"crm": true, "ticketing": true, "file-storage": true, "a1_b": true,
		"": false, "CRM": false, "1crm": false, "crm/x": false, strings.Repeat("a", 65): false,
	}
	for in, want := range cases {
		if got := IsValidCategory(in); got != want {
			t.Errorf("IsValidCategory(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestCheckEnum_NamesAllowedValues(t *testing.T) {
	var ve ValidationError
	checkEnum(&ve, "convert", Convert("float"), ConvertNone, ConvertString)
	if len(ve.Fields) != 1 || ve.Fields[0].Message != `must be one of: "", string` {
		t.Fatalf("got %v", ve.Fields)
	}
}
