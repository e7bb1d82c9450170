package config

import (
	"os"
	"strings"
	"testing"
)

// The README's configuration table is what operators read: it must name every
// key of default.yaml with its environment variable.
func TestREADME_ConfigurationTableListsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatalf("read README: %v", err)
	}
	defaults, err := embeddedLayer(defaultsSource, "default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// viper lower-cases keys; the README spells them as default.yaml does.
	text := strings.ToLower(string(readme))
	for _, key := range defaults.v.AllKeys() {
		row := "| `" + key + "` |"
		if !strings.Contains(text, row) {
			t.Errorf("README configuration table has no row for %s", key)
		}
		if env := strings.ToLower(envName(key)); !strings.Contains(text, "`"+env+"`") {
			t.Errorf("README does not name the environment variable of %s (%s)", key, envName(key))
		}
	}
}
