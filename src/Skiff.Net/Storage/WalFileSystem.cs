using Microsoft.Win32.SafeHandles;

namespace Skiff.Net.Storage;

/// <summary>One open file of the write-ahead log: positional reads and writes, a data sync and a truncation.
/// Behind an interface so the crash-consistency tests can record what was synced and replay a crash.</summary>
internal interface IWalFile : IDisposable
{
    /// <summary>The file's current length in bytes.</summary>
    long Length { get; }

    /// <summary>Reads up to <paramref name="buffer"/>'s length at <paramref name="offset"/>; returns the bytes read
    /// (fewer at the end of the file).</summary>
    int Read(long offset, Span<byte> buffer);

    /// <summary>Writes the buffers one after the other from <paramref name="offset"/> (not durable until
    /// <see cref="Sync"/>).</summary>
    void Write(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers);

    /// <summary>Makes the file's data and length durable (fdatasync).</summary>
    void Sync();

    /// <summary>Cuts the file to <paramref name="length"/> bytes (not durable until <see cref="Sync"/>).</summary>
    void Truncate(long length);
}

/// <summary>The file-system operations the write-ahead log and the hard-state file need. Creations and deletions of files are durable
/// only once their directory is synced (<see cref="SyncDirectory"/>), as on a real file system.</summary>
internal interface IWalFileSystem
{
    /// <summary>Creates the directory (and parents) durably if missing.</summary>
    void CreateDirectory(string dir);

    /// <summary>The names (not paths) of the files in <paramref name="dir"/> ending with <paramref name="suffix"/>.</summary>
    IReadOnlyList<string> List(string dir, string suffix);

    /// <summary>Opens a file for reading and writing, creating it empty if <paramref name="create"/> and missing.</summary>
    IWalFile Open(string path, bool create);

    /// <summary>Deletes a file if it exists (durable once the directory is synced).</summary>
    void Delete(string path);

    /// <summary>Renames a file, replacing <paramref name="to"/> if it exists (durable once the directory is synced).</summary>
    void Rename(string from, string to);

    /// <summary>Makes the directory's entries (creations, deletions, renames) durable.</summary>
    void SyncDirectory(string dir);

    /// <summary>Whether every operation must come from the log's writer thread, in one order a seed replays (a
    /// crash test's recording file system), rather than some (deleting segments) in the background.</summary>
    bool Deterministic => false;
}

/// <summary>The real file system: positional I/O on file handles, <c>fdatasync</c>, directory fsync.</summary>
internal sealed class RealWalFileSystem : IWalFileSystem
{
    /// <summary>The one instance.</summary>
    public static readonly RealWalFileSystem Instance = new();

    /// <inheritdoc/>
    public void CreateDirectory(string dir) => StorageIo.Guard(dir, () => StorageIo.CreateDirectoryDurably(dir));

    /// <inheritdoc/>
    public IReadOnlyList<string> List(string dir, string suffix) =>
        StorageIo.Guard(dir, () => Directory.EnumerateFiles(dir, "*" + suffix).Select(p => Path.GetFileName(p)).ToList());

    /// <inheritdoc/>
    public IWalFile Open(string path, bool create) =>
        new RealWalFile(path, StorageIo.Guard(path, () => File.OpenHandle(path, create ? FileMode.OpenOrCreate : FileMode.Open, FileAccess.ReadWrite, FileShare.Read)));

    /// <inheritdoc/>
    public void Delete(string path) => StorageIo.Guard(path, () => File.Delete(path));

    /// <inheritdoc/>
    public void Rename(string from, string to) => StorageIo.Guard(to, () => File.Move(from, to, overwrite: true));

    /// <inheritdoc/>
    public void SyncDirectory(string dir) => StorageIo.FsyncDirectory(dir);

    private sealed class RealWalFile(string path, SafeFileHandle handle) : IWalFile
    {
        public long Length => StorageIo.Guard(path, () => RandomAccess.GetLength(handle));

        public int Read(long offset, Span<byte> buffer)
        {
            int total = 0;
            while (total < buffer.Length)
            {
                int n = RandomAccess.Read(handle, buffer[total..], offset + total);
                if (n == 0) break;
                total += n;
            }
            return total;
        }

        public void Write(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers) =>
            StorageIo.Guard(path, () => RandomAccess.Write(handle, buffers, offset));

        public void Sync() => StorageIo.Fdatasync(handle, path);

        public void Truncate(long length) => StorageIo.Guard(path, () => RandomAccess.SetLength(handle, length));

        public void Dispose() => handle.Dispose();
    }
}
