using System.Text;
using System.Text.Json;
using Spectre.Console;

namespace Skiff.Cli;

/// <summary>Writes a command's result as text for people (<c>--output table</c>) or JSON for scripts
/// (<c>--output json</c>). Results go to stdout; notes (such as "watching") go to stderr so stdout stays parseable.</summary>
internal sealed class Out(bool json)
{
    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false };

    public bool Json { get; } = json;

    /// <summary>A console for tables: plain (no colour, wide) when stdout is not a terminal.</summary>
    public static IAnsiConsole Console { get; } = CreateConsole();

    private static IAnsiConsole CreateConsole()
    {
        var redirected = System.Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = redirected ? AnsiSupport.No : AnsiSupport.Detect,
            ColorSystem = redirected ? ColorSystemSupport.NoColors : ColorSystemSupport.Detect,
            Interactive = redirected ? InteractionSupport.No : InteractionSupport.Detect,
            Out = new AnsiConsoleOutput(System.Console.Out),
        });
        if (redirected) console.Profile.Width = 200;
        return console;
    }

    public void Done(string text, object document) =>
        System.Console.WriteLine(Json ? JsonSerializer.Serialize(document, Compact) : text);

    public void Value(string key, byte[] value)
    {
        if (Json)
        {
            System.Console.WriteLine(JsonSerializer.Serialize(new { key, value = Encoding.UTF8.GetString(value) }, Compact));
            return;
        }
        // The raw bytes, so binary and non-UTF-8 values come out as they went in; a newline only if they lack one.
        using var stdout = System.Console.OpenStandardOutput();
        stdout.Write(value);
        if (value.Length == 0 || value[^1] != (byte)'\n') stdout.WriteByte((byte)'\n');
    }

    public void Lines(IReadOnlyList<string> items, string name)
    {
        if (Json)
        {
            System.Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, IReadOnlyList<string>> { [name] = items }, Compact));
            return;
        }
        foreach (var item in items) System.Console.WriteLine(item);
    }

    /// <summary>One page of a listing: its items as <see cref="Lines"/>, and where to continue: in JSON a <c>next</c>
    /// field (null on the last page), for people a note on stderr naming the <c>--start-after</c> to pass.</summary>
    public void Page(ListPage page, string name)
    {
        if (Json)
        {
            System.Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?> { [name] = page.Items, ["next"] = page.Next }, Compact));
            return;
        }
        foreach (var item in page.Items) System.Console.WriteLine(item);
        if (page.Next is { } next) System.Console.Error.WriteLine($"skiff: more {name} follow; continue with --start-after '{next}'");
    }

    public void Ready(string note) => System.Console.Error.WriteLine(note);

    public void Change(Change change)
    {
        var text = change.Value is { } v ? Encoding.UTF8.GetString(v.Span) : null;
        var kind = change.Kind == ChangeKind.Insert ? "put" : "del";
        System.Console.WriteLine(Json
            ? JsonSerializer.Serialize(new { index = change.Index, kind, key = change.Key, value = text }, Compact)
            : text is null ? $"{change.Index} {kind} {change.Key}" : $"{change.Index} {kind} {change.Key} {text}");
        System.Console.Out.Flush();
    }

    public void Document(object document) => System.Console.WriteLine(JsonSerializer.Serialize(document, Compact));

    public static string Short(Guid? id) => id is { } g ? g.ToString()[..8] : "-";

    /// <summary>The status table: one row per member, as the demo and <c>skiff status</c> show it.</summary>
    public static Table StatusTable(ClusterStatus status, Func<MemberStatus, string>? name = null)
    {
        var table = new Table().Border(TableBorder.Rounded);
        if (name is not null) table.AddColumn("node");
        table.AddColumn("id").AddColumn("address").AddColumn("role").AddColumn(new TableColumn("term").RightAligned())
            .AddColumn(new TableColumn("commit").RightAligned()).AddColumn(new TableColumn("applied").RightAligned())
            .AddColumn("leader");
        foreach (var m in status.Members)
        {
            var role = Role(m);
            var styled = role switch
            {
                "leader" => "[bold green]leader[/]",
                "down" => "[red]down[/]",
                "candidate" => "[yellow]candidate[/]",
                _ => role,
            };
            var cells = new List<string>();
            if (name is not null) cells.Add(Markup.Escape(name(m)));
            cells.AddRange(new[]
            {
                Short(m.Id), Markup.Escape(m.Address), styled,
                m.Reachable ? m.Term.ToString() : "-", m.Reachable ? m.CommitIndex.ToString() : "-",
                m.Reachable ? m.AppliedIndex.ToString() : "-", m.Reachable ? Short(m.LeaderId) : "-",
            });
            table.AddRow(cells.ToArray());
        }
        return table;
    }

    /// <summary>leader, follower, candidate, learner, or down.</summary>
    public static string Role(MemberStatus m) =>
        !m.Reachable ? "down"
        : m.Role is "Leader" ? "leader"
        : m.Role is "Candidate" or "PreCandidate" ? "candidate"
        : m.Voter ? "follower" : "learner";
}
