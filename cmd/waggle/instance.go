package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	cpapi "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	"github.com/wagglevm/waggle/vmconfig"
)

// DefaultAPIListen is where `waggle control-plane` serves its external API
// (the one `waggle instance` and `waggle sled` call) unless told otherwise.
const DefaultAPIListen = "127.0.0.1:12220"

// sagaPollInterval is how often a command that follows a saga reads its
// progress.
var sagaPollInterval = 250 * time.Millisecond

var instanceCommands = []vmCommand{
	{"create", "create an instance from a spec (-spec file.json) or a config (-config file.toml); -start starts it"},
	{"list", "list the instances"},
	{"get", "show an instance: its state, where it runs, its migration"},
	{"start", "start an instance on a sled with room, and show the saga's steps until it is done"},
	{"stop", "stop an instance, and show the saga's steps until it is done"},
	{"reboot", "restart an instance's guest, and show the saga's steps until it is done"},
	{"migrate", "live-migrate an instance to another sled (-to SLED_ID, or any with room), with the saga's steps"},
	{"delete", "delete a stopped instance, and show the saga's steps until it is done"},
	{"serial", "attach to an instance's serial console (detach with Ctrl-]; it ends when the VMM stops or moves)"},
}

const cpCommonFlags = `
common flags:
  -server ADDR        the control plane's external API: host:port, http://host:port, or a host (port 12220)
                      (default $WAGGLE_CONTROL_PLANE or 127.0.0.1:12220)
  -token-file FILE    its bearer token (default $WAGGLE_CONTROL_PLANE_TOKEN_FILE, else the file the
                      control plane wrote at start)
  -o text|json        output for people (default) or for programs (the API's JSON)
`

func instanceUsage() string {
	var b strings.Builder
	b.WriteString("usage: waggle instance <command> [flags] [NAME]\n\ncommands:\n")
	for _, c := range instanceCommands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString(`
NAME is the instance's name or id. start, stop, reboot, migrate, delete (and create -start) follow the
saga they begin until it ends; -no-wait returns at once.
` + cpCommonFlags + "\n`waggle instance <command> -h` shows a command's flags.\n")
	return b.String()
}

// cpCmd holds what every `waggle instance` and `waggle sled` command
// shares.
type cpCmd struct {
	group, name, summary string
	fs                   *flag.FlagSet
	server               *string
	tokenFile            *string
	output               *string
	stdout, stderr       io.Writer
	ep                   endpoint // set by parse
	args                 []string // the positional arguments, set by parse
}

func newCPCmd(group, name, summary string, stdout, stderr io.Writer) *cpCmd {
	fs := flag.NewFlagSet("waggle "+group+" "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	def := os.Getenv("WAGGLE_CONTROL_PLANE")
	if def == "" {
		def = DefaultAPIListen
	}
	return &cpCmd{
		group: group, name: name, summary: summary, fs: fs,
		server: fs.String("server", def, "the control plane's external API: host:port, http://host:port, or a host (port 12220)"),
		tokenFile: fs.String("token-file", os.Getenv("WAGGLE_CONTROL_PLANE_TOKEN_FILE"),
			"its bearer token (default $WAGGLE_CONTROL_PLANE_TOKEN_FILE, else the file the control plane wrote)"),
		output: fs.String("o", "text", "output: text or json"),
		stdout: stdout, stderr: stderr,
	}
}

func (c *cpCmd) usage(w io.Writer, operand string) {
	fmt.Fprintf(w, "usage: waggle %s %s [flags]%s\n\n%s\n\nflags:\n", c.group, c.name, operand, c.summary)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
}

// parse parses the flags, which may come before or after the operands, and
// wants exactly nargs operands (named operand in messages).
func (c *cpCmd) parse(args []string, nargs int, operand string) error {
	usageOperand := ""
	if operand != "" {
		usageOperand = " " + operand
	}
	var pos []string
	for {
		err := c.fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			c.usage(c.stdout, usageOperand)
			return errHelp
		case err != nil:
			fmt.Fprintf(c.stderr, "waggle %s %s: %v\n", c.group, c.name, err)
			c.usage(c.stderr, usageOperand)
			return errUsage
		}
		if c.fs.NArg() == 0 {
			break
		}
		pos = append(pos, c.fs.Arg(0))
		args = c.fs.Args()[1:]
	}
	if *c.output != "text" && *c.output != "json" {
		fmt.Fprintf(c.stderr, "waggle %s %s: -o: want text or json, not %q\n", c.group, c.name, *c.output)
		return errUsage
	}
	if len(pos) != nargs {
		if nargs == 0 {
			fmt.Fprintf(c.stderr, "waggle %s %s: unexpected arguments: %v\n", c.group, c.name, pos)
		} else {
			fmt.Fprintf(c.stderr, "waggle %s %s: want %s (an instance's name or id), got %d arguments\n", c.group, c.name, operand, len(pos))
		}
		c.usage(c.stderr, usageOperand)
		return errUsage
	}
	c.args = pos
	var err error
	if c.ep, err = parseControlPlane(*c.server); err != nil {
		fmt.Fprintf(c.stderr, "waggle %s %s: -server: %v\n", c.group, c.name, err)
		return errUsage
	}
	return nil
}

// parseControlPlane reads a control plane's address as parseServer does,
// but a bare host means port 12220.
func parseControlPlane(s string) (endpoint, error) {
	s = strings.TrimSpace(s)
	scheme, host := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		scheme, host = s[:i+3], s[i+3:]
	}
	path := ""
	if i := strings.Index(host, "/"); i >= 0 {
		host, path = host[:i], host[i:]
	}
	if _, _, err := net.SplitHostPort(host); err != nil && host != "" && strings.HasPrefix(host, "[") == strings.HasSuffix(host, "]") {
		_, port, _ := net.SplitHostPort(DefaultAPIListen)
		host = net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), port)
	}
	return parseServer(scheme + host + path)
}

func (c *cpCmd) json() bool { return *c.output == "json" }

func (c *cpCmd) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// client returns a client of the control plane's external API.
func (c *cpCmd) client() (*cpapi.ClientWithResponses, error) {
	tok, err := serverToken(c.ep, *c.tokenFile)
	if err != nil {
		return nil, err
	}
	opts := []cpapi.ClientOption{cpapi.WithHTTPClient(&http.Client{Timeout: 60 * time.Second})}
	if tok != "" {
		opts = append(opts, cpapi.WithRequestEditorFn(httpkit.BearerAuth(tok)))
	}
	return cpapi.NewClientWithResponses(c.ep.baseURL()+"/v1", opts...)
}

// fail turns an error answer about the instance (or saga, or sled) ref
// into an error that says what to do.
func (c *cpCmd) fail(status int, body []byte, ref string) error {
	return cpErr(c.ep.String(), status, body, ref)
}

// runInstance runs one `waggle instance` command line.
func runInstance(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, instanceUsage())
		return errUsage
	}
	summary := ""
	for _, ic := range instanceCommands {
		if ic.name == args[0] {
			summary = ic.summary
		}
	}
	c := newCPCmd("instance", args[0], summary, stdout, stderr)
	rest := args[1:]
	var err error
	switch args[0] {
	case "create":
		err = c.create(ctx, rest)
	case "list":
		err = c.list(ctx, rest)
	case "get":
		err = c.get(ctx, rest)
	case "start", "stop", "reboot", "delete", "migrate":
		err = c.action(ctx, args[0], rest)
	case "serial":
		err = c.serial(ctx, rest, stdin)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, instanceUsage())
		return nil
	default:
		fmt.Fprintf(stderr, "waggle instance: unknown command %q\n%s", args[0], instanceUsage())
		return errUsage
	}
	return explainCPNetErr(err)
}

func (c *cpCmd) create(ctx context.Context, args []string) error {
	specPath := c.fs.String("spec", "", "a vmm-server v1 InstanceSpec as JSON")
	configPath := c.fs.String("config", "", "a VM config file (TOML)")
	name := c.fs.String("name", "", "the instance's name (default: the config's name)")
	desc := c.fs.String("description", "", "the instance's description (default: the config's)")
	start := c.fs.Bool("start", false, "start the instance once created")
	noWait := c.fs.Bool("no-wait", false, "with -start, do not follow the saga")
	if err := c.parse(args, 0, ""); err != nil {
		return err
	}
	if (*specPath == "") == (*configPath == "") {
		fmt.Fprintln(c.stderr, "waggle instance create: give exactly one of -spec and -config")
		c.usage(c.stderr, "")
		return errUsage
	}
	body := cpapi.InstanceCreate{Name: *name, Spec: cpapi.SpecEnvelope{SpecVersion: specv1.Version}}
	var raw []byte
	if *configPath != "" {
		f, err := vmconfig.Load(*configPath)
		if err != nil {
			return err
		}
		s, err := f.Spec()
		if err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
		wire, err := specv1.FromSpec(s)
		if err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
		if raw, err = json.Marshal(wire); err != nil {
			return err
		}
		if body.Name == "" {
			body.Name = f.Name
		}
		if *desc == "" && f.Description != "" {
			body.Description = &f.Description
		}
	} else {
		data, err := os.ReadFile(*specPath)
		if err != nil {
			return err
		}
		if _, err := specv1.DecodeInstanceSpec(data); err != nil {
			return fmt.Errorf("%s: %w", *specPath, err)
		}
		raw = data
	}
	if err := json.Unmarshal(raw, &body.Spec.Spec); err != nil {
		return fmt.Errorf("the spec: %w", err)
	}
	if body.Name == "" {
		fmt.Fprintln(c.stderr, "waggle instance create: give -name (the config names none)")
		return errUsage
	}
	if *desc != "" {
		body.Description = desc
	}
	if *start {
		body.Start = start
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.InstanceCreateWithResponse(ctx, body)
	if err != nil {
		return err
	}
	if r.JSON201 == nil {
		return c.fail(r.StatusCode(), r.Body, body.Name)
	}
	created := *r.JSON201
	if created.Saga == nil || *noWait {
		if c.json() {
			return c.printJSON(created)
		}
		fmt.Fprintf(c.stdout, "created instance %s (%s)\n", created.Instance.Name, created.Instance.Id)
		if created.Saga != nil {
			fmt.Fprintf(c.stdout, "saga %s (%s) under way; `waggle instance get %s` shows the instance\n", created.Saga.Id, created.Saga.Kind, created.Instance.Name)
		}
		return nil
	}
	if !c.json() {
		fmt.Fprintf(c.stdout, "created instance %s (%s)\n", created.Instance.Name, created.Instance.Id)
	}
	final, err := c.follow(ctx, cl, *created.Saga, created.Instance.Name)
	if c.json() {
		created.Saga = &final
		if g, gerr := cl.InstanceGetWithResponse(ctx, created.Instance.Id.String()); gerr == nil && g.JSON200 != nil {
			created.Instance = *g.JSON200
		}
		if perr := c.printJSON(created); perr != nil {
			return perr
		}
	}
	return err
}

func (c *cpCmd) list(ctx context.Context, args []string) error {
	if err := c.parse(args, 0, ""); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	all := cpapi.InstanceList{Instances: []cpapi.Instance{}}
	err = followPages(func(token *string) (*string, error) {
		r, err := cl.InstanceListWithResponse(ctx, &cpapi.InstanceListParams{PageToken: token})
		if err != nil {
			return nil, err
		}
		if r.JSON200 == nil {
			return nil, c.fail(r.StatusCode(), r.Body, "")
		}
		all.Instances = append(all.Instances, r.JSON200.Instances...)
		return r.JSON200.NextPageToken, nil
	})
	if err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(all)
	}
	if len(all.Instances) == 0 {
		fmt.Fprintln(c.stdout, "no instances; create one with `waggle instance create -name NAME -spec FILE`")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSTATE\tCPUS\tMEMORY\tSLED")
	for _, in := range all.Instances {
		sled := "-"
		if in.ActiveVmm != nil {
			sled = in.ActiveVmm.SledId.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d MiB\t%s\n", in.Name, in.Id, in.State, in.Resources.Cpus, in.Resources.MemoryMib, sled)
	}
	return tw.Flush()
}

// maxListPages bounds the pages a list follows: a control plane that
// kept answering tokens would otherwise hold the command forever (at the
// default 100 items a page, it is a million items).
const maxListPages = 10000

// followPages reads a list page by page: page asks the page that token
// starts (nil for the first) and answers the next page's token, nil on the
// last. A token answered twice, or more pages than maxListPages, is an
// error rather than a loop.
func followPages(page func(token *string) (next *string, err error)) error {
	var token *string
	seen := map[string]bool{}
	for range maxListPages {
		next, err := page(token)
		if err != nil {
			return err
		}
		if next == nil {
			return nil
		}
		if seen[*next] {
			return fmt.Errorf("the control plane answered the same page token twice (after %d pages): its list does not end", len(seen)+1)
		}
		seen[*next] = true
		token = next
	}
	return fmt.Errorf("the list did not end within %d pages", maxListPages)
}

func (c *cpCmd) get(ctx context.Context, args []string) error {
	if err := c.parse(args, 1, "NAME"); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.InstanceGetWithResponse(ctx, c.args[0])
	if err != nil {
		return err
	}
	if r.JSON200 == nil {
		return c.fail(r.StatusCode(), r.Body, c.args[0])
	}
	if c.json() {
		return c.printJSON(r.JSON200)
	}
	in := r.JSON200
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", in.Name)
	fmt.Fprintf(tw, "id\t%s\n", in.Id)
	if in.Description != "" {
		fmt.Fprintf(tw, "description\t%s\n", in.Description)
	}
	fmt.Fprintf(tw, "state\t%s\n", in.State)
	fmt.Fprintf(tw, "generation\t%d\n", in.Generation)
	fmt.Fprintf(tw, "resources\t%d CPUs, %d MiB\n", in.Resources.Cpus, in.Resources.MemoryMib)
	fmt.Fprintf(tw, "spec\t%s\n", in.Spec.SpecVersion)
	if in.FailureReason != nil {
		fmt.Fprintf(tw, "failure\t%s: %s\n", in.FailureReason.Kind, in.FailureReason.Message)
	}
	if v := in.ActiveVmm; v != nil {
		addr := ""
		if v.Address != nil {
			addr = " at " + *v.Address
		}
		fmt.Fprintf(tw, "vmm\t%s (%s) on sled %s%s\n", v.Id, v.State, v.SledId, addr)
		if v.FailureReason != nil {
			fmt.Fprintf(tw, "vmm failure\t%s: %s\n", v.FailureReason.Kind, v.FailureReason.Message)
		}
	}
	if m := in.Migration; m != nil {
		fmt.Fprintf(tw, "migration\t%s: source %s, target %s (VMM %s)\n", m.Id, m.SourceState, m.TargetState, m.TargetVmmId)
	}
	fmt.Fprintf(tw, "created\t%s\n", in.TimeCreated.Format(time.RFC3339))
	fmt.Fprintf(tw, "updated\t%s\n", in.TimeUpdated.Format(time.RFC3339))
	return tw.Flush()
}

// action runs start, stop, reboot, migrate or delete: it begins the saga
// and follows it, unless -no-wait.
func (c *cpCmd) action(ctx context.Context, verb string, args []string) error {
	noWait := c.fs.Bool("no-wait", false, "return once the saga has begun, without following it")
	var to *string
	if verb == "migrate" {
		to = c.fs.String("to", "", "the id of the sled to move to (default: any other sled with room; see `waggle sled list`)")
	}
	if err := c.parse(args, 1, "NAME"); err != nil {
		return err
	}
	ref := c.args[0]
	var target *uuid.UUID
	if to != nil && *to != "" {
		u, err := uuid.Parse(*to)
		if err != nil {
			fmt.Fprintf(c.stderr, "waggle instance migrate: -to: %q is not a sled's id (a UUID; `waggle sled list` shows them)\n", *to)
			return errUsage
		}
		target = &u
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var status int
	var body []byte
	var saga *cpapi.Saga
	switch verb {
	case "start":
		r, err := cl.InstanceStartWithResponse(ctx, ref)
		if err != nil {
			return err
		}
		status, body, saga = r.StatusCode(), r.Body, r.JSON202
	case "stop":
		r, err := cl.InstanceStopWithResponse(ctx, ref)
		if err != nil {
			return err
		}
		status, body, saga = r.StatusCode(), r.Body, r.JSON202
	case "reboot":
		r, err := cl.InstanceRebootWithResponse(ctx, ref)
		if err != nil {
			return err
		}
		status, body, saga = r.StatusCode(), r.Body, r.JSON202
	case "delete":
		r, err := cl.InstanceDeleteWithResponse(ctx, ref)
		if err != nil {
			return err
		}
		status, body, saga = r.StatusCode(), r.Body, r.JSON202
	case "migrate":
		r, err := cl.InstanceMigrateWithResponse(ctx, ref, cpapi.InstanceMigrate{TargetSled: target})
		if err != nil {
			return err
		}
		status, body, saga = r.StatusCode(), r.Body, r.JSON202
	}
	if saga == nil {
		return c.fail(status, body, ref)
	}
	if *noWait {
		if c.json() {
			return c.printJSON(saga)
		}
		fmt.Fprintf(c.stdout, "saga %s (%s of %s) under way; `waggle instance get %s` shows the instance\n", saga.Id, verb, ref, ref)
		return nil
	}
	final, err := c.follow(ctx, cl, *saga, ref)
	if c.json() {
		if perr := c.printJSON(final); perr != nil {
			return perr
		}
	}
	return err
}

// follow reads the saga's progress until it ends, printing each step as it
// completes (unless -o json), and returns its last view: an error unless it
// ended done.
func (c *cpCmd) follow(ctx context.Context, cl *cpapi.ClientWithResponses, s cpapi.Saga, ref string) (cpapi.Saga, error) {
	what := strings.TrimPrefix(string(s.Kind), "instance_")
	if !c.json() {
		fmt.Fprintf(c.stdout, "%s %s: saga %s\n", what, ref, s.Id)
	}
	shown := map[string]cpapi.SagaStepState{}
	show := func(s cpapi.Saga) {
		if c.json() {
			return
		}
		for _, st := range s.Steps {
			if st.State == cpapi.SagaStepStatePending || shown[st.Name] == st.State {
				continue
			}
			shown[st.Name] = st.State
			fmt.Fprintf(c.stdout, "  %-7s %s\n", st.State, st.Name)
		}
	}
	tick := time.NewTicker(sagaPollInterval)
	defer tick.Stop()
	for {
		show(s)
		switch s.State {
		case cpapi.SagaStateDone:
			if !c.json() {
				fmt.Fprintf(c.stdout, "%s %s: done\n", what, ref)
			}
			return s, nil
		case cpapi.SagaStateUnwound:
			if !c.json() {
				fmt.Fprintf(c.stdout, "%s %s: unwound\n", what, ref)
			}
			return s, fmt.Errorf("the %s of %s failed and was undone: %s; `waggle instance get %s` shows where it stands", what, ref, sagaError(s), ref)
		case cpapi.SagaStateStuck:
			return s, fmt.Errorf("the %s of %s is stuck: %s; an undo keeps failing and an operator must look (saga %s, in the control plane's log)",
				what, ref, sagaError(s), s.Id)
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("stopped following saga %s (%s of %s), which goes on: %w", s.Id, what, ref, ctx.Err())
		case <-tick.C:
		}
		r, err := cl.SagaGetWithResponse(ctx, s.Id)
		if err != nil {
			return s, explainCPNetErr(err)
		}
		if r.JSON200 == nil {
			return s, c.fail(r.StatusCode(), r.Body, s.Id.String())
		}
		s = *r.JSON200
	}
}

// sagaError is why a saga failed, for people, with its code for scripts.
func sagaError(s cpapi.Saga) string {
	why := "no reason given"
	if s.Error != nil && *s.Error != "" {
		why = *s.Error
	}
	if s.ErrorCode != nil {
		why += " (error_code " + string(*s.ErrorCode) + ")"
	}
	return why
}

// cpErr turns an error answer of the control plane at server into an
// apiError that says what to do; ref is the instance (or saga) asked
// about.
func cpErr(server string, status int, body []byte, ref string) *apiError {
	e := apiErr(server, status, body)
	e.Text, e.Hint = "", ""
	name := ref
	if name == "" {
		name = "NAME"
	}
	switch e.Code {
	case "unauthorized":
		e.Text = fmt.Sprintf("the control plane at %s refused the CLI's token", server)
		e.Hint = "the CLI sends the token in -token-file, else the one the control plane wrote at start for its " +
			"-api-listen address (waggle/tokens/HOST_PORT under $XDG_STATE_HOME or ~/.local/state); for a control " +
			"plane started with -api-token-file FILE, give the CLI `-token-file FILE`"
	case "no_such_instance":
		e.Text = fmt.Sprintf("no instance is named %s or has that id", ref)
		e.Hint = "`waggle instance list` shows the instances"
	case "no_such_sled":
		e.Hint = "`waggle sled list` shows the sleds and their ids"
	case "name_in_use":
		e.Text = fmt.Sprintf("an instance named %s exists already", ref)
		e.Hint = fmt.Sprintf("choose another -name, or delete that one first (waggle instance delete %s)", ref)
	case "instance_busy":
		e.Text = fmt.Sprintf("another operation on %s is under way", name)
		e.Hint = fmt.Sprintf("wait for it (waggle instance get %s) and try again", name)
	case "invalid_state":
		e.Hint = fmt.Sprintf("`waggle instance get %s` shows its state", name)
	case "insufficient_capacity":
		e.Hint = "`waggle sled list` shows what each sled has free; stop or delete another instance, or add a sled"
	case "same_sled":
		e.Hint = "give -to another sled's id (`waggle sled list`), or leave -to out to let the control plane choose"
	case "invalid_spec":
		e.Hint = "fix the spec where the message says and create again"
	case "unavailable":
		e.Hint = "the control plane's database does not answer; try again in a moment"
	case "sled_unavailable":
		e.Hint = fmt.Sprintf("the sled that runs %s does not answer; `waggle sled list` shows when it was last heard from", name)
	}
	return e
}

// explainCPNetErr says what to do when the control plane cannot be
// reached.
func explainCPNetErr(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) || !errors.Is(err, syscall.ECONNREFUSED) {
		return explainNetErr(err)
	}
	addr := ue.URL
	if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
		addr = u.Host
	}
	return fmt.Errorf("no control plane at %s (start one with `waggle control-plane`, or point -server or $WAGGLE_CONTROL_PLANE at its -api-listen address)", addr)
}
