// Package deploy holds the fleet's Kubernetes manifests (kubernetes/) and the test
// that checks them against the Kubernetes API types and against the code: probe
// paths, the ports the configuration listens on, the queue names the KEDA
// ScaledObjects watch, and the one Secret every secret comes from.
package deploy
