package domain

import (
	"strings"
	"testing"
)

func TestIsValidEventType_FollowsTheGrammar(t *testing.T) {
	cases := []struct {
		in   string
		want bool
	}{
		{"sync", true},
		{"sync.completed", true},
		{"contact.updated_v2.x9", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"Sync.completed", false},
		{"sync..completed", false},
		{".sync", false},
		{"sync.", false},
		{"1sync", false},
		{"sync.1x", false},
		{"sync._x", false},
		{"sync-completed", false},
		{"sync.*", false},
		{"*", false},
		{"sync completed", false},
	}
	for _, tc := range cases {
		if got := IsValidEventType(tc.in); got != tc.want {
			t.Errorf("IsValidEventType(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidateEventFilter_AcceptsExactPrefixAndStar(t *testing.T) {
	cases := []struct {
		in    string
		valid bool
	}{
		{"*", true},
		{"sync.completed", true},
		{"sync.*", true},
		{"sync.run.*", true},
		{strings.Repeat("a", 126) + ".*", true},
		{strings.Repeat("a", 127) + ".*", false}, // 129 characters
		{"", false},
		{"sync*", false},
		{"*.completed", false},
		{"sync.*.x", false},
		{".*", false},
		{"sync.**", false},
		{"**", false},
		{"SYNC.*", false},
	}
	for _, tc := range cases {
		err := ValidateEventFilter(tc.in)
		if tc.valid && err != nil {
			t.Errorf("ValidateEventFilter(%q) rejected a valid filter: %v", tc.in, err)
		}
		if !tc.valid {
			if err == nil {
				t.Errorf("ValidateEventFilter(%q) accepted an invalid filter", tc.in)
				continue
			}
			assertFieldError(t, err, "eventType")
		}
	}
}

func TestMatchesEventType_SelectsByExactPrefixOrStar(t *testing.T) {
	cases := []struct {
		name    string
		filters []string
		event   string
		want    bool
	}{
		{"exact", []string{"sync.completed"}, "sync.completed", true},
		{"exact differs", []string{"sync.completed"}, "sync.failed", false},
		{"star matches all", []string{"*"}, "anything.at.all", true},
		{"prefix one level", []string{"sync.*"}, "sync.x", true},
		{"prefix two levels", []string{"sync.*"}, "sync.x.y", true},
		{"prefix not itself", []string{"sync.*"}, "sync", false},
		{"prefix not a longer word", []string{"sync.*"}, "syncx.a", false},
		{"nested prefix", []string{"sync.run.*"}, "sync.run.done", true},
		{"nested prefix not sibling", []string{"sync.run.*"}, "sync.runs.done", false},
		{"second filter", []string{"contact.updated", "sync.*"}, "sync.failed", true},
		{"no filters", nil, "sync.failed", false},
		{"empty filter", []string{""}, "sync.failed", false},
		{"invalid bare star suffix", []string{"sync*"}, "syncx", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := MatchesEventType(tc.filters, tc.event); got != tc.want {
				t.Fatalf("MatchesEventType(%q, %q) = %v, want %v", tc.filters, tc.event, got, tc.want)
			}
		})
	}
}

func TestWebhookEndpoint_AcceptsOnlyWhenActiveAndMatching(t *testing.T) {
	w := validWebhook()
	if !w.Accepts("sync.completed") {
		t.Fatal("an active endpoint with sync.* should accept sync.completed")
	}
	if w.Accepts("invoice.paid") {
		t.Fatal("endpoint accepted an event no filter selects")
	}
	w.Status = WebhookDisabled
	if w.Accepts("sync.completed") {
		t.Fatal("a disabled endpoint must not accept events")
	}
}
