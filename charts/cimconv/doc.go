// Package chart is the cimconv Helm chart (Chart.yaml, values.yaml,
// values.schema.json, templates/, dashboards/). It has no Go code of its own:
// its tests render the chart with helm and decode every object strictly into
// the Kubernetes API types, check each pod's flags, CIMCONV_* variables and
// mounted files against the converter itself (the built ./cmd/converter and
// internal/service's loader), check the dashboard's metrics and labels against
// internal/metrics, keep the Dockerfiles in step with the pods, and run the
// helm commands of docs/deploy.md.
//
// The chart owns deployment only: it never spells a metric name (they come
// from internal/metrics) and never creates Secrets (it references existing ones).
package chart
