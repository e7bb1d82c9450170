// Package domain holds the Integration Manager's model: the records kept in the
// ten Cosmos containers, the commands and events exchanged on the broker, and
// the rules that decide whether any of them is valid.
//
// It is pure on purpose: no I/O and only the standard library, so the API, the
// workers and both store backends share one definition of "valid" and can test
// it without infrastructure.
package domain
