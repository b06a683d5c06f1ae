package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// item is one event read from a payload, before filtering: ignore is set
// when the parser already knows the event is not a manifest push.
type item struct {
	ev              Event
	configMediaType string   // config descriptor media type, when the payload has it
	refTypes        []string // media/artifact types of referenced descriptors (distribution includereferences)
	ignore          string
}

// Manifest media types (docker schema2 and OCI) that can name an image.
var manifestMediaTypes = map[string]bool{
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
	"application/vnd.oci.image.manifest.v1+json":                true,
	"application/vnd.oci.image.index.v1+json":                   true,
}

// nonImageManifest returns why a manifest media type cannot be an image to
// convert, or "" when it can (or is unknown and the worker must decide).
func nonImageManifest(mt string) string {
	switch mt {
	case "application/vnd.docker.distribution.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.v1+prettyjws":
		return "schema1 manifest (no Windows image uses it)"
	case "application/vnd.oci.artifact.manifest.v1+json":
		return "OCI artifact manifest, not an image"
	}
	return ""
}

// parseBody reads the events of one request body for an endpoint; hdr
// matters for CloudEvents (binary mode attributes, content type).
func parseBody(endpoint string, hdr http.Header, body []byte) ([]item, error) {
	switch endpoint {
	case SourceDistribution:
		return parseDistribution(body)
	case SourceHarbor:
		if isCloudEvent(hdr, body) {
			return parseCloudEvents(hdr, body)
		}
		return parseHarbor(body)
	case SourceCloudEvents:
		return parseCloudEvents(hdr, body)
	case SourceACR:
		if isCloudEvent(hdr, body) {
			// ACR events routed through Event Grid (CloudEvents schema).
			return parseCloudEvents(hdr, body)
		}
		return parseACR(body)
	}
	return nil, fmt.Errorf("unknown endpoint %q", endpoint)
}

// decodeObject unmarshals a JSON object into v with a one-line error naming
// the payload kind.
func decodeObject(kind string, data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return fmt.Errorf("%s: empty body", kind)
	}
	if data[0] != '{' {
		return fmt.Errorf("%s: body is not a JSON object", kind)
	}
	if err := json.Unmarshal(data, v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("%s: malformed JSON at byte %d: %v", kind, se.Offset, se)
		case errors.As(err, &te):
			return fmt.Errorf("%s: field %q has the wrong JSON type (%s, want %s)", kind, te.Field, te.Value, te.Type)
		}
		return fmt.Errorf("%s: %v", kind, err)
	}
	return nil
}

// --- CNCF distribution ---------------------------------------------------

// Envelope and event as sent by distribution/v3 notifications (media type
// application/vnd.docker.distribution.events.v2+json); only the fields we
// use.
type distEnvelope struct {
	Events *[]distEvent `json:"events"`
}

type distEvent struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	Target struct {
		MediaType    string       `json:"mediaType"`
		ArtifactType string       `json:"artifactType"`
		Digest       string       `json:"digest"`
		Repository   string       `json:"repository"`
		URL          string       `json:"url"`
		Tag          string       `json:"tag"`
		References   []descriptor `json:"references"`
	} `json:"target"`
	Request struct {
		Host string `json:"host"`
	} `json:"request"`
}

type descriptor struct {
	MediaType    string `json:"mediaType"`
	ArtifactType string `json:"artifactType"`
	Digest       string `json:"digest"`
}

func parseDistribution(body []byte) ([]item, error) {
	var env distEnvelope
	if err := decodeObject("distribution envelope", body, &env); err != nil {
		return nil, err
	}
	if env.Events == nil {
		return nil, errors.New(`distribution envelope: no "events" array`)
	}
	items := make([]item, 0, len(*env.Events))
	for _, de := range *env.Events {
		t := de.Target
		it := item{ev: Event{
			Registry:     urlHost(t.URL),
			Repository:   t.Repository,
			Digest:       t.Digest,
			Tag:          t.Tag,
			MediaType:    t.MediaType,
			ArtifactType: t.ArtifactType,
			ID:           de.ID,
		}}
		if it.ev.Registry == "" {
			it.ev.Registry = de.Request.Host
		}
		for _, d := range t.References {
			it.refTypes = append(it.refTypes, d.MediaType, d.ArtifactType)
		}
		switch {
		case de.Action != "push":
			it.ignore = fmt.Sprintf("action %q is not a push", de.Action)
		case strings.Contains(t.URL, "/blobs/"):
			it.ignore = "blob push, not a manifest"
		case manifestMediaTypes[t.MediaType]:
		case nonImageManifest(t.MediaType) != "":
			it.ignore = nonImageManifest(t.MediaType)
		case strings.Contains(t.URL, "/manifests/"):
			// A manifest of a type we do not know: the worker decides.
		default:
			it.ignore = fmt.Sprintf("media type %q is not a manifest", t.MediaType)
		}
		items = append(items, it)
	}
	return items, nil
}

func urlHost(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Host
}

// --- Harbor (default format) ---------------------------------------------

// Harbor's "Default" webhook payload (PUSH_ARTIFACT and friends).
type harborPayload struct {
	Type      string           `json:"type"`
	EventData *harborEventData `json:"event_data"`
}

type harborEventData struct {
	Resources []struct {
		Digest      string `json:"digest"`
		Tag         string `json:"tag"`
		ResourceURL string `json:"resource_url"`
	} `json:"resources"`
	Repository struct {
		Name         string `json:"name"`
		Namespace    string `json:"namespace"`
		RepoFullName string `json:"repo_full_name"`
	} `json:"repository"`
}

func parseHarbor(body []byte) ([]item, error) {
	var p harborPayload
	if err := decodeObject("harbor payload", body, &p); err != nil {
		return nil, err
	}
	if p.Type == "" {
		return nil, errors.New(`harbor payload: no "type"`)
	}
	if p.Type != "PUSH_ARTIFACT" {
		return []item{{ev: harborRepoOnly(p.EventData), ignore: fmt.Sprintf("harbor event type %s is not PUSH_ARTIFACT", p.Type)}}, nil
	}
	if p.EventData == nil {
		return nil, errors.New(`harbor payload: PUSH_ARTIFACT without "event_data"`)
	}
	return harborItems("", p.EventData), nil
}

func harborRepoOnly(d *harborEventData) Event {
	if d == nil {
		return Event{}
	}
	return Event{Repository: harborRepo(d)}
}

func harborRepo(d *harborEventData) string {
	if d.Repository.RepoFullName != "" {
		return d.Repository.RepoFullName
	}
	if d.Repository.Namespace != "" && d.Repository.Name != "" {
		return d.Repository.Namespace + "/" + d.Repository.Name
	}
	return d.Repository.Name
}

func harborItems(id string, d *harborEventData) []item {
	repo := harborRepo(d)
	items := make([]item, 0, len(d.Resources))
	for _, r := range d.Resources {
		ev := Event{
			Repository: repo,
			Digest:     r.Digest,
			Tag:        r.Tag,
			ID:         id,
		}
		// resource_url is "<harbor host>/<project>/<repo>(:tag|@digest)".
		u := strings.TrimPrefix(strings.TrimPrefix(r.ResourceURL, "https://"), "http://")
		if host, _, ok := strings.Cut(u, "/"); ok {
			ev.Registry = host
		}
		if strings.Contains(ev.Tag, ":") {
			// Pushed by digest: Harbor repeats the digest as the tag.
			ev.Tag = ""
		}
		if len(d.Resources) > 1 && id != "" {
			ev.ID = id + "/" + r.Digest
		}
		items = append(items, item{ev: ev})
	}
	return items
}

// --- Azure Container Registry ---------------------------------------------

// ACR webhook payload (and the data of Event Grid's
// Microsoft.ContainerRegistry.* events).
type acrEvent struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	} `json:"target"`
	Request struct {
		Host string `json:"host"`
	} `json:"request"`
}

func parseACR(body []byte) ([]item, error) {
	var e acrEvent
	if err := decodeObject("acr payload", body, &e); err != nil {
		return nil, err
	}
	if e.Action == "" {
		return nil, errors.New(`acr payload: no "action"`)
	}
	return []item{acrItem(e)}, nil
}

func acrItem(e acrEvent) item {
	it := item{ev: Event{
		Registry:   e.Request.Host,
		Repository: e.Target.Repository,
		Digest:     e.Target.Digest,
		Tag:        e.Target.Tag,
		MediaType:  e.Target.MediaType,
		ID:         e.ID,
	}}
	mt := e.Target.MediaType
	switch {
	case e.Action != "push":
		// chart_push, delete, chart_delete, quarantine, ping, ...
		it.ignore = fmt.Sprintf("action %q is not an image push", e.Action)
	case manifestMediaTypes[mt], mt == "":
	case nonImageManifest(mt) != "":
		it.ignore = nonImageManifest(mt)
	case !strings.Contains(mt, "manifest") && !strings.Contains(mt, "index"):
		it.ignore = fmt.Sprintf("media type %q is not a manifest", mt)
	}
	return it
}

// --- CloudEvents (zot, Harbor CloudEvents format, Event Grid) -------------

const (
	ceStructured = "application/cloudevents+json"
	ceBatch      = "application/cloudevents-batch+json"
)

type ceEvent struct {
	SpecVersion     string          `json:"specversion"`
	Type            string          `json:"type"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Subject         string          `json:"subject"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	DataBase64      []byte          `json:"data_base64"`
}

func mediaType(hdr http.Header) string {
	mt, _, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// isCloudEvent tells whether a request carries a CloudEvent in binary,
// structured or batch mode.
func isCloudEvent(hdr http.Header, body []byte) bool {
	if hdr.Get("Ce-Specversion") != "" {
		return true
	}
	switch mediaType(hdr) {
	case ceStructured, ceBatch:
		return true
	}
	var probe struct {
		SpecVersion string `json:"specversion"`
	}
	return json.Unmarshal(body, &probe) == nil && probe.SpecVersion != ""
}

func parseCloudEvents(hdr http.Header, body []byte) ([]item, error) {
	var events []ceEvent
	switch {
	case hdr.Get("Ce-Specversion") != "":
		// Binary mode: attributes in headers, the body is the data.
		events = []ceEvent{{
			SpecVersion:     hdr.Get("Ce-Specversion"),
			Type:            hdr.Get("Ce-Type"),
			ID:              hdr.Get("Ce-Id"),
			Source:          hdr.Get("Ce-Source"),
			Subject:         hdr.Get("Ce-Subject"),
			DataContentType: hdr.Get("Content-Type"),
			Data:            json.RawMessage(bytes.TrimSpace(body)),
		}}
	case mediaType(hdr) == ceBatch || bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")):
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 || trimmed[0] != '[' {
			return nil, errors.New("cloudevents batch: body is not a JSON array")
		}
		if err := json.Unmarshal(trimmed, &events); err != nil {
			return nil, fmt.Errorf("cloudevents batch: %v", err)
		}
	default:
		var e ceEvent
		if err := decodeObject("cloudevent", body, &e); err != nil {
			return nil, err
		}
		events = []ceEvent{e}
	}
	var items []item
	for i, e := range events {
		its, err := cloudEventItems(e)
		if err != nil {
			if len(events) > 1 {
				return nil, fmt.Errorf("cloudevents batch entry %d: %w", i, err)
			}
			return nil, err
		}
		items = append(items, its...)
	}
	return items, nil
}

func cloudEventItems(e ceEvent) ([]item, error) {
	if e.SpecVersion == "" {
		return nil, errors.New(`cloudevent: no "specversion"`)
	}
	if !strings.HasPrefix(e.SpecVersion, "1.") {
		return nil, fmt.Errorf("cloudevent: unsupported specversion %q (want 1.x)", e.SpecVersion)
	}
	if e.Type == "" {
		return nil, errors.New(`cloudevent: no "type"`)
	}
	data := []byte(bytes.TrimSpace(e.Data))
	if len(e.DataBase64) > 0 {
		data = e.DataBase64
	}
	ignored := func(reason string) []item {
		return []item{{ev: Event{ID: e.ID}, ignore: reason}}
	}
	kind := "cloudevent " + e.Type + " data"
	switch {
	case e.Type == "zotregistry.image.updated" || strings.HasSuffix(e.Type, ".image.updated"):
		// zot's events.typePrefix setting can rename the "zotregistry"
		// namespace; the data keeps zot's shape.
		var d zotImage
		if err := decodeObject(kind, data, &d); err != nil {
			return nil, err
		}
		return []item{zotItem(e.ID, d)}, nil
	case e.Type == "harbor.artifact.pushed":
		var d harborEventData
		if err := decodeObject(kind, data, &d); err != nil {
			return nil, err
		}
		return harborItems(e.ID, &d), nil
	case e.Type == "Microsoft.ContainerRegistry.ImagePushed":
		var d acrEvent
		if err := decodeObject(kind, data, &d); err != nil {
			return nil, err
		}
		if d.Action == "" {
			d.Action = "push"
		}
		if d.ID == "" {
			d.ID = e.ID
		}
		return []item{acrItem(d)}, nil
	case strings.HasPrefix(e.Type, "io.cimconv."):
		return ignored("cimconv's own event " + e.Type), nil
	}
	return ignored("event type " + e.Type + " is not a manifest push"), nil
}

// zotImage is the data of zot's zotregistry.image.* events.
type zotImage struct {
	Name      string          `json:"name"`
	Reference string          `json:"reference"`
	Digest    string          `json:"digest"`
	MediaType string          `json:"mediaType"`
	Manifest  json.RawMessage `json:"manifest"` // the manifest JSON, as a string
}

// manifestSummary holds the fields of a pushed manifest that tell an
// artifact from an image.
type manifestSummary struct {
	MediaType    string `json:"mediaType"`
	ArtifactType string `json:"artifactType"`
	Config       struct {
		MediaType string `json:"mediaType"`
	} `json:"config"`
	Subject *struct {
		Digest string `json:"digest"`
	} `json:"subject"`
}

func zotItem(id string, d zotImage) item {
	it := item{ev: Event{
		Repository: d.Name,
		Digest:     d.Digest,
		MediaType:  d.MediaType,
		ID:         id,
	}}
	if !strings.Contains(d.Reference, ":") {
		it.ev.Tag = d.Reference
	}
	if m, ok := decodeManifest(d.Manifest); ok {
		it.ev.ArtifactType = m.ArtifactType
		it.configMediaType = m.Config.MediaType
		if m.Subject != nil {
			it.ev.SubjectDigest = m.Subject.Digest
			if it.ev.SubjectDigest == "" {
				it.ev.SubjectDigest = "(unknown)"
			}
		}
	}
	if reason := nonImageManifest(d.MediaType); reason != "" {
		it.ignore = reason
	}
	return it
}

// decodeManifest reads an embedded manifest given as a JSON string (zot) or
// object. A manifest that does not parse is treated as absent: the worker
// fetches the real one anyway.
func decodeManifest(raw json.RawMessage) (manifestSummary, bool) {
	var m manifestSummary
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return m, false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return m, false
		}
		raw = []byte(s)
	}
	if json.Unmarshal(raw, &m) != nil {
		return m, false
	}
	return m, true
}
