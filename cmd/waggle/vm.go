package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	"github.com/wagglevm/waggle/vmconfig"
)

var (
	// errUsage ends a command line that could not be parsed; the usage has
	// been printed on stderr (exit status 2).
	errUsage = errors.New("usage")
	// errHelp ends a command line that asked for help; the help has been
	// printed on stdout (exit status 0).
	errHelp = errors.New("help")
)

// vmCommand is one `waggle vm` command, for the usage texts.
type vmCommand struct {
	name, summary string
}

var vmCommands = []vmCommand{
	{"create", "create the server's VM from a spec (-spec file.json) or a config (-config file.toml)"},
	{"get", "show the VM's properties, state and generation (and where it went, once migrated)"},
	{"spec", "show the VM's spec"},
	{"run", "start the VM and show each state until it runs (done at once if it runs)"},
	{"stop", "stop the VM and show each state until it has stopped (then it is destroyed; done at once if it is)"},
	{"reboot", "restart the guest (or wait for the reboot under way)"},
	{"watch", "print the VM's state, then every change, until it ends"},
	{"serial", "attach to the serial console (detach with Ctrl-]; it ends when the VM does);\n" +
		"-history prints what the guest printed, also after the VM ended"},
	{"migrate", "live-migrate the VM to another server (-to host:port), with progress and a summary;\n" +
		"-src-addr host:port is the source as the target reaches it (default: -server)"},
}

// vmUsage is the usage of `waggle vm`.
func vmUsage() string {
	var b strings.Builder
	b.WriteString("usage: waggle vm <command> [flags]\n\ncommands:\n")
	for _, c := range vmCommands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, strings.ReplaceAll(c.summary, "\n", "\n           "))
	}
	b.WriteString(`
common flags:
  -server ADDR        the VMM server: host:port, http://host:port, or a host (port 12400)
                      (default $WAGGLE_SERVER or 127.0.0.1:12400)
  -token-file FILE    the server's bearer token (default: the file the server wrote at start)
  -o text|json        output for people (default) or for programs

` + "`waggle vm <command> -h` shows a command's flags.\n")
	return b.String()
}

// vmCmd holds what every `waggle vm` command shares.
type vmCmd struct {
	name      string
	fs        *flag.FlagSet
	server    *string
	tokenFile *string
	output    *string
	stdout    io.Writer
	stderr    io.Writer
	// ep is the server -server names; set by parse.
	ep endpoint
}

func newVMCmd(name string, stdout, stderr io.Writer) *vmCmd {
	fs := flag.NewFlagSet("waggle vm "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse prints errors and usage itself, each where it belongs
	def := os.Getenv("WAGGLE_SERVER")
	if def == "" {
		def = DefaultListen
	}
	return &vmCmd{
		name:      name,
		fs:        fs,
		server:    fs.String("server", def, "the VMM server: host:port, http://host:port, or a host (port 12400)"),
		tokenFile: fs.String("token-file", os.Getenv("WAGGLE_TOKEN_FILE"), "the server's bearer token (default $WAGGLE_TOKEN_FILE, else the file the server wrote)"),
		output:    fs.String("o", "text", "output: text or json"),
		stdout:    stdout, stderr: stderr,
	}
}

// usage prints the command's usage and flags to w.
func (c *vmCmd) usage(w io.Writer) {
	summary := ""
	for _, vc := range vmCommands {
		if vc.name == c.name {
			summary = vc.summary
		}
	}
	fmt.Fprintf(w, "usage: waggle vm %s [flags]\n\n%s\n\nflags:\n", c.name, summary)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
}

// parse parses the command's flags: help goes to stdout (errHelp), a
// mistake to stderr with the usage (errUsage).
func (c *vmCmd) parse(args []string) error {
	err := c.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.usage(c.stdout)
		return errHelp
	case err != nil:
		fmt.Fprintf(c.stderr, "waggle vm %s: %v\n", c.name, err)
		c.usage(c.stderr)
		return errUsage
	}
	if *c.output != "text" && *c.output != "json" {
		fmt.Fprintf(c.stderr, "waggle vm %s: -o: want text or json, not %q\n", c.name, *c.output)
		return errUsage
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "waggle vm %s: unexpected arguments: %v (flags go before them: see -h)\n", c.name, c.fs.Args())
		return errUsage
	}
	if c.ep, err = parseServer(*c.server); err != nil {
		fmt.Fprintf(c.stderr, "waggle vm %s: -server: %v\n", c.name, err)
		return errUsage
	}
	return nil
}

// connect parses the command's flags and returns a client for the server.
func (c *vmCmd) connect(args []string) (*api.ClientWithResponses, error) {
	if err := c.parse(args); err != nil {
		return nil, err
	}
	return c.client()
}

// client returns a client for the server -server names.
func (c *vmCmd) client() (*api.ClientWithResponses, error) {
	return c.clientFor(c.ep, *c.tokenFile, 90*time.Second)
}

// clientFor returns a client for the server at ep, with the token in
// tokenFile, or else the one the server wrote where the CLI finds it.
func (c *vmCmd) clientFor(ep endpoint, tokenFile string, timeout time.Duration) (*api.ClientWithResponses, error) {
	tok, err := serverToken(ep, tokenFile)
	if err != nil {
		return nil, err
	}
	return newClient(ep, timeout, tok)
}

func (c *vmCmd) json() bool { return *c.output == "json" }

func (c *vmCmd) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// runVM runs one `waggle vm` command line.
func runVM(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, vmUsage())
		return errUsage
	}
	c := newVMCmd(args[0], stdout, stderr)
	rest := args[1:]
	var err error
	switch args[0] {
	case "create":
		err = c.create(ctx, rest)
	case "get":
		err = c.get(ctx, rest)
	case "spec":
		err = c.spec(ctx, rest)
	case "run", "stop", "reboot":
		err = c.state(ctx, args[0], rest)
	case "watch":
		err = c.watch(ctx, rest)
	case "serial":
		err = c.serial(ctx, rest, stdin)
	case "migrate":
		err = c.migrate(ctx, rest)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, vmUsage())
		return nil
	default:
		fmt.Fprintf(stderr, "waggle vm: unknown command %q\n%s", args[0], vmUsage())
		return errUsage
	}
	return explainNetErr(err)
}

func (c *vmCmd) create(ctx context.Context, args []string) error {
	specPath := c.fs.String("spec", "", "a vmm-server v1 InstanceSpec as JSON")
	configPath := c.fs.String("config", "", "a VM config file (TOML)")
	name := c.fs.String("name", "", "the instance's name (default: the config's name, else \"vm\")")
	id := c.fs.String("id", "", "the instance's UUID (default: a new one)")
	if err := c.parse(args); err != nil {
		return err
	}
	if (*specPath == "") == (*configPath == "") {
		fmt.Fprintln(c.stderr, "waggle vm create: give exactly one of -spec and -config")
		c.usage(c.stderr)
		return errUsage
	}
	props := api.InstanceProperties{Name: "vm", Id: uuid.New()}
	var wire api.InstanceSpec
	if *configPath != "" {
		f, err := vmconfig.Load(*configPath)
		if err != nil {
			return err
		}
		s, err := f.Spec()
		if err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
		if wire, err = specv1.FromSpec(s); err != nil {
			return err
		}
		if f.Name != "" {
			props.Name = f.Name
		}
		if f.Description != "" {
			props.Description = &f.Description
		}
	} else {
		data, err := os.ReadFile(*specPath)
		if err != nil {
			return err
		}
		if wire, err = specv1.DecodeInstanceSpec(data); err != nil {
			return fmt.Errorf("%s: %w", *specPath, err)
		}
	}
	if *name != "" {
		props.Name = *name
	}
	if *id != "" {
		u, err := uuid.Parse(*id)
		if err != nil {
			return fmt.Errorf("-id: %w", err)
		}
		props.Id = u
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	body, err := ensureFromSpec(props, wire)
	if err != nil {
		return err
	}
	r, err := cl.InstanceEnsureWithResponse(ctx, body)
	if err != nil {
		return err
	}
	inst := r.JSON201
	if inst == nil {
		inst = r.JSON200
	}
	if inst == nil {
		e := apiErr(c.ep.String(), r.StatusCode(), r.Body)
		if e.Code == codeInstanceExists {
			c.explainExists(ctx, cl, e, props, *id != "", wire)
		}
		return e
	}
	return c.printInstance(*inst)
}

// explainExists fills e, a 409 instance_exists answer to a create, with
// the VM the server has, how this create differs from it, and what to do.
func (c *vmCmd) explainExists(ctx context.Context, cl *api.ClientWithResponses, e *apiError, props api.InstanceProperties, idGiven bool, wire api.InstanceSpec) {
	have, err := getInstance(ctx, cl, c.ep)
	if err != nil {
		return // the general words stand
	}
	e.Text = fmt.Sprintf("the server at %s already has a VM: %q (id %s, %s)", c.ep, have.Properties.Name, have.Properties.Id, have.State)
	var diff []string
	if have.Properties.Id != props.Id {
		what := "id"
		if !idGiven {
			what += " (without -id, each create makes a new one)"
		}
		diff = append(diff, what)
	}
	if have.Properties.Name != props.Name {
		diff = append(diff, "name")
	}
	if deref(have.Properties.Description) != deref(props.Description) {
		diff = append(diff, "description")
	}
	if s, err := cl.InstanceSpecGetWithResponse(ctx); err == nil && s.JSON200 != nil {
		if s.JSON200.Spec == nil {
			diff = append(diff, "spec (the VM there is a migration target)")
		} else if parts := specDiff(*s.JSON200.Spec, wire); len(parts) > 0 {
			diff = append(diff, "spec ("+strings.Join(parts, ", ")+")")
		}
	}
	var hint strings.Builder
	if len(diff) > 0 {
		fmt.Fprintf(&hint, "this create asks for a different one (it differs in %s). ", strings.Join(diff, ", "))
	}
	switch {
	case have.State == api.InstanceStateStopping || have.State == api.InstanceStateStopped:
		hint.WriteString("The server holds one VM at a time and that one is ending: wait for it (`waggle vm watch`), then create again")
	default:
		hint.WriteString("The server holds one VM at a time: stop that one first with `waggle vm stop`, then create again")
	}
	e.Hint = hint.String()
}

// specDiff names the parts of two specs that differ: "board", "boot",
// "components.com1". Both are compared in their canonical form.
func specDiff(a, b api.InstanceSpec) []string {
	top := func(s api.InstanceSpec) map[string]json.RawMessage {
		m := map[string]json.RawMessage{}
		// Through the hub and back, every default is written out.
		if hub, err := specv1.ToSpec(s); err == nil {
			if w, err := specv1.FromSpec(hub); err == nil {
				s = w
			}
		}
		if data, err := specv1.CanonicalJSON(specv1.Canonical(s)); err == nil {
			_ = json.Unmarshal(data, &m)
		}
		return m
	}
	am, bm := top(a), top(b)
	var parts []string
	for _, k := range sortedKeys(am, bm) {
		if k == "components" {
			ac, bc := map[string]json.RawMessage{}, map[string]json.RawMessage{}
			_ = json.Unmarshal(am[k], &ac)
			_ = json.Unmarshal(bm[k], &bc)
			for _, ck := range sortedKeys(ac, bc) {
				if string(ac[ck]) != string(bc[ck]) {
					parts = append(parts, "components."+ck)
				}
			}
			continue
		}
		if string(am[k]) != string(bm[k]) {
			parts = append(parts, k)
		}
	}
	return parts
}

// sortedKeys returns the keys of both maps, sorted, each once.
func sortedKeys(a, b map[string]json.RawMessage) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func (c *vmCmd) printInstance(inst api.Instance) error {
	return c.printInstanceMoved(inst, nil)
}

// printInstanceMoved prints inst and, when out is set, the outbound
// migration that took its VM away.
func (c *vmCmd) printInstanceMoved(inst api.Instance, out *api.MigrationProgress) error {
	if c.json() {
		return c.printJSON(inst)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", inst.Properties.Name)
	fmt.Fprintf(tw, "id\t%s\n", inst.Properties.Id)
	fmt.Fprintf(tw, "state\t%s\n", inst.State)
	fmt.Fprintf(tw, "gen\t%d\n", inst.Gen)
	if inst.FailureReason != nil {
		fmt.Fprintf(tw, "failure\t%s\n", *inst.FailureReason)
	}
	if out != nil {
		fmt.Fprintf(tw, "moved\t%s\n", movedText(*out))
	}
	return tw.Flush()
}

// movedText says where a VM went that an outbound migration took away.
// The source does not know the target's address, so it says what it knows.
func movedText(out api.MigrationProgress) string {
	return fmt.Sprintf("migrated out (migration %s completed); the VM runs on at the target server", out.MigrationId)
}

// migratedOut returns the outbound migration that took the VM away, when
// st is a destroyed source whose migration completed.
func migratedOut(st api.InstanceStateView) *api.MigrationProgress {
	out := st.Migration.MigrationOut
	if st.State != api.InstanceStateDestroyed || out == nil || out.Phase != api.MigrationPhaseCompleted {
		return nil
	}
	return out
}

// getInstance fetches the instance of the server at ep.
func getInstance(ctx context.Context, cl *api.ClientWithResponses, ep endpoint) (api.Instance, error) {
	r, err := cl.InstanceGetWithResponse(ctx)
	if err != nil {
		return api.Instance{}, err
	}
	if r.JSON200 == nil {
		return api.Instance{}, apiErr(ep.String(), r.StatusCode(), r.Body)
	}
	return *r.JSON200, nil
}

func (c *vmCmd) get(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	inst, err := getInstance(ctx, cl, c.ep)
	if err != nil {
		return err
	}
	var out *api.MigrationProgress
	if inst.State == api.InstanceStateDestroyed && !c.json() {
		if st, err := stateNow(ctx, cl, c.ep); err == nil {
			out = migratedOut(st)
		}
	}
	return c.printInstanceMoved(inst, out)
}

func (c *vmCmd) spec(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	r, err := cl.InstanceSpecGetWithResponse(ctx)
	if err != nil {
		return err
	}
	if r.JSON200 == nil {
		return apiErr(c.ep.String(), r.StatusCode(), r.Body)
	}
	if r.JSON200.Spec == nil && !c.json() {
		fmt.Fprintln(c.stdout, "the VM waits for its migration source to send its spec")
		return nil
	}
	if c.json() {
		return c.printJSON(r.JSON200)
	}
	return c.printJSON(r.JSON200.Spec)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
