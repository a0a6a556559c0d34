package httpkit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readAnswer reads one answer on br and its body.
func readAnswer(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// TestUnauthenticatedSlowBodiesCannotFillTheServer: strangers that send
// the start of a body and then nothing, to a secured operation that takes
// a body (401) or to an open one that takes none (answered without
// reading it), take every place; they are answered at once with
// Connection: close, and a client with the token is served all the same.
func TestUnauthenticatedSlowBodiesCannotFillTheServer(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken)}) // the default 10 s body deadline
	_, addr := startServer(t, h, ServerOptions{MaxConns: 4})
	requests := []string{
		"PUT " + itemPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
		"PUT " + itemPath + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
		"GET /v1/open HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
		"GET /v1/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
	}
	for _, raw := range requests {
		c := dial(t, addr)
		_, err := io.WriteString(c, raw)
		require.NoError(t, err)
		resp, _ := readAnswer(t, bufio.NewReader(c))
		require.Contains(t, []int{http.StatusUnauthorized, http.StatusOK}, resp.StatusCode, raw)
		require.True(t, resp.Close, "an answer given before the body was read closes the connection: %q", raw)
	}
	// All four are still open (their bodies never end), and none holds
	// its place against a client with the token.
	for range 3 {
		c := dial(t, addr)
		resp := roundTrip(t, c, bufio.NewReader(c), itemPath)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		c.Close()
	}
}

// TestUnauthenticatedBusyRequestIsEvictable: a request without good
// credentials that its handler keeps busy (an open operation) does not
// hold its connection's place against a newcomer; one with good
// credentials does.
func TestUnauthenticatedBusyRequestIsEvictable(t *testing.T) {
	entered := make(chan struct{}, 4)
	h, err := NewHandler(HandlerOptions{Auth: BearerToken(goodToken), Log: quiet}, Version{Prefix: "/v1",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("block") {
				entered <- struct{}{}
				<-r.Context().Done()
				return
			}
			w.WriteHeader(http.StatusOK)
		})})
	require.NoError(t, err)
	_, addr := startServer(t, h, ServerOptions{MaxConns: 2})
	// tryBlock sends a request that stays busy in the handler and returns
	// its connection once the handler has it, or nil when the server
	// refused the connection instead (it answered or closed it).
	tryBlock := func(auth string) net.Conn {
		c := dial(t, addr)
		_, err := fmt.Fprintf(c, "GET /v1/x?block HTTP/1.1\r\nHost: x\r\n%s\r\n", auth)
		require.NoError(t, err)
		refused := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			refused <- err
		}()
		select {
		case <-entered:
			// Stop the watching read (a deadline in the past ends it), so
			// that it takes nothing the test reads later.
			require.NoError(t, c.SetReadDeadline(time.Now()))
			<-refused
			require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
			return c
		case err := <-refused:
			t.Logf("the server refused a busy request's connection: %v", err)
			return nil
		case <-time.After(10 * time.Second):
			t.Fatal("the request neither reached the handler nor was refused within 10 s")
			return nil
		}
	}
	block := func(auth string) net.Conn {
		c := tryBlock(auth)
		require.NotNil(t, c)
		return c
	}
	strangers := []net.Conn{block(""), block("Authorization: Bearer wrong\r\n")}
	c := dial(t, addr)
	resp := roundTrip(t, c, bufio.NewReader(c), "/v1/x")
	require.Equal(t, http.StatusOK, resp.StatusCode, "a stranger's busy request made way")
	c.Close()
	_ = strangers[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = strangers[0].Read(make([]byte, 1))
	require.True(t, closedByServer(err), "the older stranger was evicted: %v", err)

	// Busy requests with the token hold their places (they take the
	// strangers' places, which are evictable or closed).
	for _, s := range strangers {
		s.Close()
	}
	// The strangers' places come free as the server sees their
	// connections close; until then a newcomer may be refused, so each
	// busy request with the token is tried again for a bounded time.
	for range 2 {
		var c net.Conn
		for try := 0; c == nil; try++ {
			require.Less(t, try, 50, "a busy request with the token never found a place")
			if c = tryBlock("Authorization: Bearer " + goodToken + "\r\n"); c == nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	c = dial(t, addr)
	_, err = fmt.Fprintf(c, "GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", goodToken)
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		} else {
			require.True(t, closedByServer(err), "refused: %v", err)
		}
	}
}

// TestBodyOfOperationWithoutOneIsIgnored: an operation whose contract
// takes no body answers as if none had been sent, whatever was sent
// (several JSON values, a malformed type, more than the limit, a body
// that never ends), and the connection is closed after the answer. The
// limit on a declared length is judged after routing and credentials.
func TestBodyOfOperationWithoutOneIsIgnored(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken), MaxBodyBytes: 100, BodyReadTimeout: 5 * time.Second})
	auth := "Authorization: Bearer " + goodToken + "\r\n"
	_, addr := startServer(t, h, ServerOptions{})
	cases := []struct {
		name, raw string
		status    int
	}{
		{"two values", "GET " + itemPath + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nContent-Length: 4\r\n\r\n{}{}", 200},
		{"malformed type", "GET " + itemPath + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: ;;\r\nContent-Length: 2\r\n\r\n{}", 200},
		{"over the limit", "GET " + itemPath + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 2000000\r\n\r\n" + strings.Repeat("a", 200), 200},
		{"slow", "GET " + itemPath + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 10\r\n\r\n{", 200},
		{"open operation", "GET /v1/open HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n{", 200},
		{"over the limit without the token", "PUT " + itemPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{", 401},
		{"over the limit on no path", "PUT /v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n{", 404},
		{"over the limit, wrong method", "POST " + itemPath + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 2000000\r\n\r\n{", 405},
		{"over the limit", "PUT " + itemPath + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{", 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := dial(t, addr)
			start := time.Now()
			_, err := io.WriteString(conn, c.raw)
			require.NoError(t, err)
			br := bufio.NewReader(conn)
			resp, body := readAnswer(t, br)
			require.Equal(t, c.status, resp.StatusCode, body)
			require.Less(t, time.Since(start), 2*time.Second, "answered without waiting for the body")
			if c.status == 200 {
				require.Empty(t, body, "the handler saw no body")
			}
			require.True(t, resp.Close, "Connection: close")
			_, err = br.ReadByte()
			require.True(t, closedByServer(err), "the connection is closed: %v", err)
		})
	}
}

// TestClientThatDoesNotReadIsCut: a handler writing a large answer to a
// client that reads none of it fails its writes once the write deadline
// passes, instead of blocking for ever.
func TestClientThatDoesNotReadIsCut(t *testing.T) {
	done := make(chan error, 1)
	h, err := NewHandler(HandlerOptions{Auth: NoAuth(), Log: quiet, WriteTimeout: 300 * time.Millisecond}, Version{Prefix: "/v1",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 1<<16)
			for i := 0; i < 1<<12; i++ { // 256 MiB: far more than the socket buffers
				if _, err := w.Write(chunk); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		})})
	require.NoError(t, err)
	_, addr := startServer(t, h, ServerOptions{})
	c := dial(t, addr)
	_, err = fmt.Fprintf(c, "GET /v1/big HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	select {
	case err := <-done:
		require.Error(t, err, "the write failed")
	case <-time.After(10 * time.Second):
		t.Fatal("the handler is still blocked writing to a client that does not read")
	}
}

// TestHijackedConnectionHasNoDeadlines: a connection taken over by its
// handler lives past the skeleton's write and body deadlines.
func TestHijackedConnectionHasNoDeadlines(t *testing.T) {
	const short = 100 * time.Millisecond
	h, err := NewHandler(HandlerOptions{Auth: NoAuth(), Log: quiet, WriteTimeout: short, BodyReadTimeout: short}, Version{Prefix: "/v1",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body)
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			<-time.After(3 * short) // past both deadlines: the behaviour under test
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			line, err := brw.ReadString('\n')
			if err == nil {
				_, _ = brw.WriteString("echo " + line)
				_ = brw.Flush()
			}
		})})
	require.NoError(t, err)
	_, addr := startServer(t, h, ServerOptions{})
	c := dial(t, addr)
	_, err = fmt.Fprintf(c, "POST /v1/up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\nContent-Length: 2\r\n\r\n{}")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	<-time.After(3 * short)
	_, err = io.WriteString(c, "hello\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err, "the upgraded connection outlives the deadlines")
	require.Equal(t, "echo hello\n", line)
}
