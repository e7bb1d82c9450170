package sender_test

import (
	"bytes"
	"flag"
	"os"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
)

var update = flag.Bool("update", false, "rewrite docs/asyncapi.yaml")

const asyncAPIPath = "../../docs/asyncapi.yaml"

// Upstream teams code against docs/asyncapi.yaml: it must list every topic in
// code with the messages routed to it, and nothing else.
func TestAsyncAPI_DocumentMatchesTopicsInCode(t *testing.T) {
	want, err := sender.AsyncAPI()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(asyncAPIPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(asyncAPIPath)
	if err != nil {
		t.Fatalf("read %s: %v", asyncAPIPath, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/asyncapi.yaml is out of date with the code; regenerate: go test ./messaging/sender -run TestAsyncAPI -update")
	}

	var doc struct {
		AsyncAPI string `yaml:"asyncapi"`
		Channels map[string]struct {
			Address  string         `yaml:"address"`
			Messages map[string]any `yaml:"messages"`
		} `yaml:"channels"`
		Components struct {
			Messages map[string]struct {
				Name string `yaml:"name"`
			} `yaml:"messages"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(got, &doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml is not YAML: %v", err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Errorf("asyncapi version %q, want 3.0.0", doc.AsyncAPI)
	}
	var addresses []string
	for _, ch := range doc.Channels {
		addresses = append(addresses, ch.Address)
		if len(ch.Messages) == 0 {
			t.Errorf("channel %s documents no message", ch.Address)
		}
	}
	var topics []string
	for _, tp := range messaging.Topics() {
		topics = append(topics, tp.Name)
	}
	slices.Sort(addresses)
	slices.Sort(topics)
	if !slices.Equal(addresses, topics) {
		t.Errorf("documented channels %v, topics in code %v", addresses, topics)
	}
	var documentedTypes []string
	for _, m := range doc.Components.Messages {
		documentedTypes = append(documentedTypes, m.Name)
	}
	for _, mt := range domain.MessageTypes() {
		if !slices.Contains(documentedTypes, mt.Name) {
			t.Errorf("message type %s is not documented", mt.Name)
		}
	}
}

// Every message type has exactly one topic, and every command/event topic carries one.
func TestRoutes_EveryMessageTypeHasOneTopic(t *testing.T) {
	seen := map[string]int{}
	for _, r := range sender.Routes() {
		seen[r.CEType]++
	}
	for _, mt := range domain.MessageTypes() {
		if seen[mt.Name] != 1 {
			t.Errorf("message type %s is routed to %d topics, want 1", mt.Name, seen[mt.Name])
		}
	}
	routed := map[string]bool{}
	for _, r := range sender.Routes() {
		routed[r.Topic] = true
	}
	for _, tp := range messaging.Topics() {
		if tp.Kind != messaging.KindPoison && !routed[tp.Name] {
			t.Errorf("topic %s carries no message type", tp.Name)
		}
	}
}
