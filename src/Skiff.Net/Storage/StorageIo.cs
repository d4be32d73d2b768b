using System.Runtime.InteropServices;

namespace Skiff.Net.Storage;

/// <summary>Small durable-file helpers: directory fsync (which .NET does not offer), atomic replace, and the
/// mapping of I/O failures to <see cref="SkiffException"/>.</summary>
internal static class StorageIo
{
    [DllImport("libc", SetLastError = true, EntryPoint = "open")]
    private static extern int SysOpen([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", SetLastError = true, EntryPoint = "fsync")]
    private static extern int SysFsync(int fd);

    [DllImport("libc", SetLastError = true, EntryPoint = "fdatasync")]
    private static extern int SysFdatasync(nint fd);

    [DllImport("libc", SetLastError = true, EntryPoint = "close")]
    private static extern int SysClose(int fd);

    /// <summary>Test hook: called with the full path of every directory <see cref="FsyncDirectory"/> syncs.</summary>
    internal static Action<string>? DirectorySynced;

    /// <summary>Test hook: called with the open file and its path just before every file sync (<see cref="Fdatasync"/>,
    /// <see cref="WriteAtomically"/>), so the crash-consistency tests know what each sync makes durable.</summary>
    internal static Action<Microsoft.Win32.SafeHandles.SafeFileHandle, string>? FileSyncing;

    /// <summary>Creates <paramref name="directory"/> and any missing parents durably: each directory created is
    /// synced (so entries made in it later can be made durable) and so is the parent it was created in (so its own
    /// entry survives a power loss). An existing directory is left alone.</summary>
    /// <param name="directory">The directory to create.</param>
    public static void CreateDirectoryDurably(string directory)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        var missing = new Stack<string>();
        for (var d = full; d is not null && !Directory.Exists(d); d = Path.GetDirectoryName(d))
            missing.Push(d);
        if (missing.Count == 0) return;
        Directory.CreateDirectory(full);
        foreach (var created in missing)
        {
            FsyncDirectory(created);
            if (Path.GetDirectoryName(created) is { } parent) FsyncDirectory(parent);
        }
    }

    /// <summary>Makes a directory's entries (creations, renames, deletions) durable. A no-op off Unix.</summary>
    /// <param name="directory">The directory to sync.</param>
    public static void FsyncDirectory(string directory)
    {
        DirectorySynced?.Invoke(Path.GetFullPath(directory));
        if (OperatingSystem.IsWindows()) return;
        const int O_RDONLY = 0;
        int fd = SysOpen(directory, O_RDONLY);
        if (fd < 0)
            throw new SkiffException(ErrorKind.StorageError,
                $"cannot open directory {directory} to sync it (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (SysFsync(fd) != 0)
                throw new SkiffException(ErrorKind.StorageError,
                    $"fsync of directory {directory} failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            SysClose(fd);
        }
    }

    /// <summary>fdatasync on an open file: its data (and the metadata needed to read it back) reach the disk.
    /// Falls back to a full flush off Linux.</summary>
    /// <param name="handle">The open file.</param>
    /// <param name="path">Its path, for the error message.</param>
    public static void Fdatasync(Microsoft.Win32.SafeHandles.SafeFileHandle handle, string path)
    {
        FileSyncing?.Invoke(handle, path);
        if (!OperatingSystem.IsLinux())
        {
            using var fs = new FileStream(handle, FileAccess.ReadWrite);
            fs.Flush(flushToDisk: true);
            return;
        }
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            if (SysFdatasync(handle.DangerousGetHandle()) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw new SkiffException(ErrorKind.StorageError,
                    $"fdatasync of {path} failed (errno {errno}{(errno == 28 ? ", disk full" : errno == 30 ? ", read-only file system" : "")})");
            }
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>Writes a whole file atomically: temp file, fsync, rename over the target, fsync the directory.
    /// A crash at any instant leaves either the old or the new content.</summary>
    /// <param name="path">The file to replace.</param>
    /// <param name="content">Its new content.</param>
    public static void WriteAtomically(string path, ReadOnlySpan<byte> content)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var temp = path + ".tmp";
        try
        {
            using (var fs = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                fs.Write(content);
                fs.Flush();
                FileSyncing?.Invoke(fs.SafeFileHandle, temp);
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Wrap(path, e);
        }
        FsyncDirectory(dir);
    }

    /// <summary>Turns an I/O failure into a <see cref="SkiffException"/> of kind
    /// <see cref="ErrorKind.StorageError"/> naming the path; passes a SkiffException through unchanged.</summary>
    /// <param name="path">The file or directory the operation was about.</param>
    /// <param name="e">The failure.</param>
    /// <returns>The exception to throw.</returns>
    public static SkiffException Wrap(string path, Exception e)
    {
        if (e is SkiffException s) return s;
        var what = e.HResult switch
        {
            var h when (h & 0xFFFF) == 28 => "disk full",          // ENOSPC
            var h when (h & 0xFFFF) == 30 => "read-only file system", // EROFS
            _ => e.GetType().Name,
        };
        return new SkiffException(ErrorKind.StorageError, $"{what} at {path}: {e.Message}", e);
    }

    /// <summary>Runs an action, mapping I/O failures to <see cref="ErrorKind.StorageError"/>.</summary>
    /// <param name="path">What the action touches, for the message.</param>
    /// <param name="action">The action.</param>
    public static void Guard(string path, Action action)
    {
        try { action(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw Wrap(path, e); }
    }

    /// <summary>Runs a function, mapping I/O failures to <see cref="ErrorKind.StorageError"/>.</summary>
    /// <typeparam name="T">The result type.</typeparam>
    /// <param name="path">What the function touches, for the message.</param>
    /// <param name="f">The function.</param>
    /// <returns>Its result.</returns>
    public static T Guard<T>(string path, Func<T> f)
    {
        try { return f(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw Wrap(path, e); }
    }
}
