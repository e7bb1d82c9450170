package cosmos

// OpenWithTransport is open for the external tests: wrap wraps the HTTP
// transport so a test can inject faults or watch requests.
var OpenWithTransport = open
