using System.Diagnostics;
using System.Net;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Skiff.Cli;

/// <summary>What the demo shows: the live table and the latest events on a terminal, plain lines otherwise.</summary>
internal sealed class DemoView(bool live, Stopwatch clock)
{
    private readonly List<string> _events = new();
    private readonly Lock _gate = new();
    private volatile ClusterStatus? _status;
    private string _step = "";

    public ClusterStatus? Status
    {
        get => _status;
        set => _status = value;
    }

    public void Step(string text)
    {
        lock (_gate) _step = text;
        Add($"== {text}");
    }

    public void Note(string text) => Add($"   {text}");

    private void Add(string text)
    {
        var line = $"[{clock.Elapsed.TotalSeconds,5:0.0}s] {text}";
        lock (_gate) _events.Add(line);
        if (!live)
        {
            Console.WriteLine(line);
            Console.Out.Flush();
        }
    }

    /// <summary>Plain mode: the member table as lines, at the demo's milestones.</summary>
    public void Snapshot()
    {
        if (live || _status is not { } s) return;
        foreach (var m in s.Members)
            Console.WriteLine($"         {Name(m),-7} {m.Address,-16} {Out.Role(m),-9} term {(m.Reachable ? m.Term.ToString() : "-"),-3} " +
                              $"commit {(m.Reachable ? m.CommitIndex.ToString() : "-"),-4} applied {(m.Reachable ? m.AppliedIndex.ToString() : "-"),-4} " +
                              $"leader {(m.Reachable ? Out.Short(m.LeaderId) : "-")}");
    }

    private static string Name(MemberStatus m) =>
        IPEndPoint.TryParse(m.Address, out var ep) ? $"node {ep.Address.GetAddressBytes()[3]}" : "?";

    /// <summary>Runs <paramref name="work"/>; on a terminal, inside a live display redrawn every 200 ms and once
    /// more at the end.</summary>
    public async Task<T> ShowWhileAsync<T>(Func<Task<T>> work)
    {
        if (!live) return await work();
        var result = default(T)!;
        await AnsiConsole.Live(Render()).AutoClear(false).Overflow(VerticalOverflow.Ellipsis)
            .StartAsync(async ctx =>
            {
                using var refresh = new CancellationTokenSource();
                var refresher = Task.Run(async () =>
                {
                    while (!refresh.IsCancellationRequested)
                    {
                        ctx.UpdateTarget(Render());
                        try { await Task.Delay(200, refresh.Token); } catch (OperationCanceledException) { }
                    }
                });
                try { result = await work(); }
                finally
                {
                    await refresh.CancelAsync();
                    await refresher;
                    ctx.UpdateTarget(Render());
                }
            });
        return result;
    }

    private IRenderable Render()
    {
        string[] recent;
        string step;
        lock (_gate)
        {
            recent = _events.TakeLast(14).ToArray();
            step = _step;
        }
        IRenderable table = _status is { } s
            ? Out.StatusTable(s, Name).Title($"[bold]Skiff demo[/] — {Markup.Escape(step)}")
            : new Markup("[grey]waiting for the first status…[/]");
        var log = new Rows(recent.Select(l => new Text(l)).Cast<IRenderable>().ToArray());
        return new Rows(table, new Panel(log).Header("events").Expand());
    }
}
