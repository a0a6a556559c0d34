package httpkit

import "net/http"

// GuardMetrics serves h, a metrics endpoint outside any API version, to
// authenticated GETs and HEADs only: 401 unauthorized without the bearer
// token, 405 with Allow for any other method.
func GuardMetrics(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Authenticated(r.Context()) {
			WriteError(w, r, Errorf(http.StatusUnauthorized, CodeUnauthorized,
				"this path needs a bearer token: send header Authorization: Bearer <token>"))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			WriteError(w, r, Errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
				"%s is not allowed on /metrics; allowed: GET, HEAD", r.Method))
			return
		}
		h.ServeHTTP(w, r)
	})
}
