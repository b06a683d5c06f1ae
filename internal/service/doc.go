// Package service wires `converter serve`: its configuration (YAML file,
// CIMCONV_* environment variables and flags), the NATS connection or an
// embedded nats-server, the worker, and the HTTP server (/metrics, /healthz,
// /readyz and the webhook handler under /webhooks/).
//
// It owns no conversion logic and no webhook parsing: the Converter and the
// webhook handler are handed in through Options by the command.
package service
