package server

import (
	"net/http"
	"strings"
	"time"
)

func msDuration(ms int32) time.Duration { return time.Duration(ms) * time.Millisecond }

// headerHasToken reports whether a comma-separated header holds token,
// ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
