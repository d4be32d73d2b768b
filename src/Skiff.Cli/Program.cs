using System.CommandLine;
using System.CommandLine.Help;
using Skiff.Cli;

// The `skiff` command. Every command is defined in Commands.cs; this only parses, and turns a parse error into one
// line on stderr with exit code 2 (System.CommandLine's own default would be 1, which we keep for the unexpected).
var root = Commands.Build();
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0 && parsed.Action is not HelpAction)
{
    var message = System.Text.RegularExpressions.Regex.Replace(parsed.Errors[0].Message, @"\s+", " ").Trim();
    Console.Error.WriteLine($"skiff: {message} (see 'skiff --help')");
    return Exit.Usage;
}
// serve shuts its node down cleanly on SIGINT/SIGTERM; give it the time to, instead of the default 2 s.
return await parsed.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(15) });
