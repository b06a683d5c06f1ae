package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// authFor returns the Auth of an endpoint; ok is false when the endpoint has
// neither credentials nor an explicit no-auth opt-out. A nil Auth with ok
// means "no check".
func (h *Handler) authFor(endpoint string) (*Auth, bool) {
	if a, ok := h.cfg.auth[endpoint]; ok {
		return &a, true
	}
	if h.cfg.noAuth[endpoint] {
		return nil, true
	}
	if a, ok := h.cfg.auth["*"]; ok {
		return &a, true
	}
	if h.cfg.noAuth["*"] {
		return nil, true
	}
	return nil, false
}

// checkToken accepts "Bearer <token>", the bare token, or Basic credentials
// whose password is the token. Comparisons run in constant time.
func checkToken(header, token string) error {
	if header == "" {
		return errors.New("missing Authorization header")
	}
	candidate := header
	scheme, rest, hasScheme := strings.Cut(header, " ")
	switch {
	case hasScheme && strings.EqualFold(scheme, "Bearer"):
		candidate = strings.TrimSpace(rest)
	case hasScheme && strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return errors.New("malformed Basic credentials")
		}
		_, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return errors.New("malformed Basic credentials")
		}
		candidate = pass
	}
	if subtle.ConstantTimeCompare([]byte(candidate), []byte(token)) != 1 {
		return errors.New("wrong token")
	}
	return nil
}

// checkSignature verifies the HMAC-SHA256 of timestamp + "." + body and the
// freshness of the timestamp. It returns the normalized signature and how
// long it must be remembered: until its timestamp leaves the window, after
// which the freshness check refuses it anyway. (Whether it was used before
// is the caller's: ServeHTTP.)
func (h *Handler) checkSignature(hdr http.Header, body []byte, a *Auth) (sig string, expires time.Time, err error) {
	sigHeader := strings.TrimSpace(hdr.Get(a.SignatureHeader))
	tsHeader := strings.TrimSpace(hdr.Get(a.TimestampHeader))
	if sigHeader == "" {
		return "", time.Time{}, fmt.Errorf("missing signature header %s", a.SignatureHeader)
	}
	if tsHeader == "" {
		return "", time.Time{}, fmt.Errorf("missing timestamp header %s", a.TimestampHeader)
	}
	secs, err := strconv.ParseInt(tsHeader, 10, 64)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("timestamp header %s is not Unix seconds", a.TimestampHeader)
	}
	hexSig := strings.TrimPrefix(strings.ToLower(sigHeader), "sha256=")
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return "", time.Time{}, fmt.Errorf("signature header %s is not a hex HMAC-SHA256", a.SignatureHeader)
	}
	mac := hmac.New(sha256.New, a.HMACSecret)
	mac.Write([]byte(tsHeader))
	mac.Write([]byte("."))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return "", time.Time{}, errors.New("signature mismatch")
	}
	// Freshness is checked after the MAC so that only the holder of the
	// secret learns about clock skew.
	now := h.cfg.now()
	ts := time.Unix(secs, 0)
	if d := now.Sub(ts); d > a.ReplayWindow {
		return "", time.Time{}, fmt.Errorf("signature timestamp is %s old (window %s)", d.Truncate(time.Second), a.ReplayWindow)
	} else if -d > a.ReplayWindow {
		return "", time.Time{}, fmt.Errorf("signature timestamp is %s in the future (window %s)", (-d).Truncate(time.Second), a.ReplayWindow)
	}
	return hexSig, ts.Add(a.ReplayWindow + time.Second), nil
}
